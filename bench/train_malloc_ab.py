"""Peak RSS and tokens/s of the bench's tuneforge LoRA worker under glibc malloc settings, alternated.

glibc keeps freed activation memory for reuse (its mmap threshold rises to the largest freed block);
a fixed small threshold hands every freed tensor back to the kernel, lowering peak RSS at the cost of
mapping and page-faulting every activation again each step. Each run is a fresh process
(``bench.common.run_worker``: peak RSS is its ru_maxrss), the variants in flipping order every round.
``python -m bench.train_malloc_ab [steps] [rounds]`` (BENCHMARKS.md, "Peak RSS").
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench import common
from bench.data import write_splits
from bench.train_workers import worker_env

BASE_ENV = worker_env(None, omp_passive=True)
VARIANTS = {
    "default": {},
    "mmap>=256K fixed": {"MALLOC_MMAP_THRESHOLD_": str(256 << 10)},
    "mmap>=1M fixed": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
    "arena max 1": {"MALLOC_ARENA_MAX": "1"},
}


def main(steps: int = 10, rounds: int = 2) -> None:
    print("load average", common.load_average(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        train_file, val_file = write_splits(Path(tmp), 800, 8)
        for rnd in range(rounds):
            for name in list(VARIANTS) if rnd % 2 == 0 else list(VARIANTS)[::-1]:
                r = common.run_worker("bench.train_workers:tuneforge_worker",
                                      {"train_file": str(train_file), "val_file": str(val_file), "method": "lora",
                                       "steps": steps, "packing": True}, env={**BASE_ENV, **VARIANTS[name]})
                print(f"round {rnd} {name:18s} peak {r['peak_rss_mb']:7.0f} MB  tok/s {r['tokens_per_s']:6.1f}  "
                      f"tok/CPU-s {r['tokens_per_cpu_s']:6.1f}  val {r['val_loss']:.4f}", flush=True)
    print("load average", common.load_average(), flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
