"""Peak RSS and tokens/s of the bench's tuneforge LoRA worker under each allocator and glibc setting, alternated.

glibc keeps freed activation memory for reuse (its mmap threshold rises to the largest freed block);
a fixed small threshold hands every freed tensor back to the kernel, lowering peak RSS at the cost of
mapping and page-faulting every activation again each step. TCMalloc and jemalloc (preloaded, as the
`tuneforge` command does: ``tuneforge/allocator.py``) keep freed blocks in their own caches. Each run is a
fresh process (``bench.common.run_worker``: peak RSS is its ru_maxrss), the variants in flipping order every
round. ``python -m bench.train_malloc_ab [steps] [rounds] [--bf16] [--omp-passive]`` (BENCHMARKS.md, "The
allocator" and "Peak RSS").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import common
from bench.data import write_splits
from bench.train_workers import worker_env
from tuneforge import allocator

GLIBC_VARIANTS = {
    "glibc": {},
    "glibc mmap>=256K fixed": {"MALLOC_MMAP_THRESHOLD_": str(256 << 10)},
    "glibc mmap>=1M fixed": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
    "glibc arena max 1": {"MALLOC_ARENA_MAX": "1"},
}


def variants() -> dict[str, dict[str, str]]:
    """glibc's settings, then every allocator library tuneforge knows that this machine has, preloaded."""
    return {**GLIBC_VARIANTS, **{f"{name} (LD_PRELOAD)": allocator.preload_env(path)
                                 for name, path in allocator.available().items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("steps", type=int, nargs="?", default=10)
    p.add_argument("rounds", type=int, nargs="?", default=2)
    p.add_argument("--bf16", action="store_true", help="the base model in bfloat16 (model.dtype: bfloat16)")
    p.add_argument("--omp-passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE, as the older runs")
    a = p.parse_args(argv)
    base_env = worker_env(None, omp_passive=a.omp_passive)
    chosen = variants()
    print("load average", common.load_average(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        train_file, val_file = write_splits(Path(tmp), 800, 8)
        for rnd in range(a.rounds):
            for name in list(chosen) if rnd % 2 == 0 else list(chosen)[::-1]:
                r = common.run_worker("bench.train_workers:tuneforge_worker",
                                      {"train_file": str(train_file), "val_file": str(val_file), "method": "lora",
                                       "steps": a.steps, "packing": True, "bf16": "weights" if a.bf16 else None},
                                      env={**base_env, **chosen[name]})
                print(f"round {rnd} {name:24s} ({r['allocator']:8s}) peak {r['peak_rss_mb']:7.0f} MB  "
                      f"tok/s {r['tokens_per_s']:6.1f}  tok/CPU-s {r['tokens_per_cpu_s']:6.1f}  "
                      f"val {r['val_loss']:.4f}", flush=True)
    print("load average", common.load_average(), flush=True)


if __name__ == "__main__":
    main()
