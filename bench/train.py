"""Training benchmark: tuneforge vs TRL's SFTTrainer, LoRA and full fine-tuning, same data and settings.

Every contender trains the bundled SmolLM2-135M-Instruct (same local weights) on the same JSONL lines
(80% short / 20% long real reviews), with the same optimisation: AdamW, lr, cosine schedule with 3%
warmup, grad-norm clip 1.0, about 2 examples per optimizer step (2 rows unpacked, 1 packed row of 192
tokens), the same number of steps, max length 192 (the few longer reviews truncated alike),
loss on the assistant tokens only (TRL: conversational prompt/completion data, whose default is
completion-only loss), LoRA r=16, alpha=32, no dropout (PEFT's and tuneforge's default) on all linear
layers. Data handling and memory options are each tool's own defaults (TRL: padding to the longest
example of each batch, bf16 autocast and gradient checkpointing on; tuneforge: packing on, length
grouping, no checkpointing), plus TRL with ``packing=True``, tuneforge with ``packing: false`` (one row
= one example, as TRL's default) and tuneforge with gradient checkpointing (TRL's memory setting).

Throughput is non-padding tokens per second of training steps (model loading, tokenisation and
validation excluded; the same for both). Validation loss is measured after training by one shared
function (token-weighted mean over the assistant tokens of the held-out lines) on each tool's trained
model in place, not by either tool. Each contender runs in a fresh process; peak RSS is that process's
ru_maxrss.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
from pathlib import Path

from bench import common
from bench.data import write_splits
from bench.train_workers import SETTINGS, worker_env

SIZES = {
    # train lines, val lines, optimizer steps
    "small": {"n_train": 48, "n_val": 4, "steps": 5},
    "full": {"n_train": 800, "n_val": 64, "steps": 40},
}
CONTENDERS = [
    # label, worker, method, packing[, extra worker arguments]
    ("TRL SFTTrainer (defaults)", "trl_worker", "lora", False),
    ("TRL SFTTrainer packing=True", "trl_worker", "lora", True),
    ("tuneforge (defaults: packing)", "tuneforge_worker", "lora", True),
    ("tuneforge packing=false", "tuneforge_worker", "lora", False),
    ("tuneforge gradient_checkpointing=true", "tuneforge_worker", "lora", True, {"checkpointing": True}),
    ("TRL SFTTrainer full (defaults)", "trl_worker", "full", False),
    ("tuneforge full (defaults)", "tuneforge_worker", "full", True),
]
# Against TRL set up for a CPU by hand (fp32, no gradient checkpointing): `--vs-tuned`.
TUNED_CONTENDERS = [
    ("TRL SFTTrainer fp32, no checkpointing", "trl_worker", "lora", False),
    ("tuneforge (defaults: packing)", "tuneforge_worker", "lora", True),
    ("tuneforge packing=false", "tuneforge_worker", "lora", False),
]


def flops_per_token(method: str, params: int) -> float:
    # 6N for full training (forward 2N, backward 4N); LoRA skips the frozen weights' gradients: 4N.
    return (6 if method == "full" else 4) * params


def run(size: str, only: list[str] | None = None, write: bool = True, threads: int | None = None,
        parallel: bool = False, vs_tuned: bool = False) -> common.Report:
    import torch

    cfg = SIZES[size]
    if threads:
        torch.set_num_threads(threads)  # the matmul peak is measured with the contenders' thread count
    # Passive OpenMP waiting: on a busy machine a spinning thread would burn CPU seconds waiting for its partner.
    env = worker_env(threads, omp_passive=True)
    command = "python -m bench.train" + (" --full" if size == "full" else "") + (" --vs-tuned" if vs_tuned else "")
    report = common.Report(name="train-tuned" if vs_tuned else "train", size=size, command=command,
                           title="Training: tuneforge vs TRL SFTTrainer" + (" set up for CPU (fp32, no checkpointing)"
                                                                           if vs_tuned else " (defaults)"))
    contenders = TUNED_CONTENDERS if vs_tuned else CONTENDERS
    peak_before, cpu_peak_before = common.matmul_rates()
    with tempfile.TemporaryDirectory(prefix="tf-bench-data-") as tmp:
        train_file, val_file = write_splits(Path(tmp), cfg["n_train"], cfg["n_val"])
        chosen = [c for c in contenders if not only or any(o in c[0] for o in only)]
        jobs = [(f"bench.train_workers:{worker}", {"train_file": str(train_file), "val_file": str(val_file), "method": method,
                                          "steps": cfg["steps"], "packing": packing, "tuned": vs_tuned, **extra})
                for _, worker, method, packing, *rest in chosen for extra in [rest[0] if rest else {}]]
        if parallel:
            outs = common.run_workers_parallel(jobs, env=env)
        else:
            outs = []
            for (label, *_), job in zip(chosen, jobs, strict=True):
                print(f"\n=== {label} ===", flush=True)
                try:
                    outs.append(common.run_worker(*job, env=env))
                except RuntimeError as exc:
                    print(exc, flush=True)
                    outs.append(None)
        results = []
        for (label, _, method, packing, *_), r in zip(chosen, outs, strict=True):
            if r is None:
                report.setup.append(f"{label}: failed (see the run's output)")
                continue
            r.update(label=label, method=method, packing=packing)
            results.append(r)
    peak_after, cpu_peak_after = common.matmul_rates()
    peak = max(peak_before, peak_after)
    cpu_peak = max(cpu_peak_before, cpu_peak_after)  # matmul GFLOP per CPU-second, all threads
    n_threads = torch.get_num_threads()
    rows = []
    for r in results:
        base = next((b for b in results if b["method"] == r["method"] and b["label"].startswith("TRL")
                     and "packing=True" not in b["label"]), None)  # TRL's row without packing: the baseline
        flops = flops_per_token(r["method"], r["params"])
        rows.append({
            "contender": r["label"], "method": r["method"], "timed tokens": r["tokens"], "wall s": r["seconds"],
            "tokens/s": r["tokens_per_s"], "x TRL (wall)": common.ratio(r["tokens_per_s"], base and base["tokens_per_s"]),
            "tokens/CPU-s": r["tokens_per_cpu_s"],
            "x TRL (CPU)": common.ratio(r["tokens_per_cpu_s"], base and base["tokens_per_cpu_s"]),
            "peak RSS MB": r["peak_rss_mb"], "RSS x TRL": common.ratio(r["peak_rss_mb"], base and base["peak_rss_mb"]),
            "val loss": r["val_loss"], "val loss x TRL": common.ratio(r["val_loss"], base and base["val_loss"]),
            "% peak (wall)": 100 * flops * r["tokens_per_s"] / 1e9 / peak,
            # per CPU-second on both sides: training FLOPs per CPU-second over matmul FLOPs per CPU-second
            "% peak (CPU)": 100 * flops * r["tokens_per_cpu_s"] / 1e9 / cpu_peak,
        })
    report.setup = report.setup + [
        "contenders ran " + ("all at the same time (same share of the shared cores)" if parallel
                             else "one after another"),
        f"data: {cfg['n_train']} training + {cfg['n_val']} validation lines, 80% Rotten Tomatoes snippets "
        "(short) + 20% Drugs.com reviews (long), identical files for every contender (bench/data.py)",
        f"{cfg['steps']} optimizer steps of {SETTINGS['batch']} examples (unpacked) or {SETTINGS['packed_batch']} "
        f"packed rows of {SETTINGS['max_length']} tokens (same number of examples per step on average), "
        f"lr {SETTINGS['lr']['lora']} (LoRA) / {SETTINGS['lr']['full']} (full), cosine, 3% warmup, clip 1.0, "
        "LoRA r=16 alpha=32 dropout 0 all-linear; fp32 on CPU; each contender in its own fresh process",
        "timed = steps 2..S (step 1 is warm-up for everyone); tokens = non-padding tokens of those steps; "
        "tokens/s over wall seconds, tokens/CPU-s over the process's CPU seconds (robust to other processes "
        "taking the cores); val loss = one shared function over the held-out lines (assistant tokens, "
        "token-weighted), not either tool's own",
        f"torch threads per contender: {n_threads}",
        f"utilisation: achieved FLOP/s = 4N (LoRA) or 6N (full) x tokens/s, N = base-model parameters "
        f"({results[0]['params'] / 1e6:.1f}M, embeddings included: they are the tied LM head) against the fp32 "
        f"matmul peak measured by torch in this run (1024x1024 mm, best of 2 s, {n_threads} thread(s)): "
        f"{peak_before:.1f} GFLOP/s before the contenders, {peak_after:.1f} after, {peak:.1f} used; (CPU): "
        f"training FLOPs per CPU-second over matmul FLOPs per CPU-second ({cpu_peak:.1f} GFLOP/CPU-s)"
        if results else "no contender ran",
    ]
    cols = ["contender", "method", "timed tokens", "wall s", "tokens/s", "x TRL (wall)", "tokens/CPU-s", "x TRL (CPU)",
            "peak RSS MB", "RSS x TRL", "val loss", "val loss x TRL", "% peak (wall)", "% peak (CPU)"]
    report.tables.append(common.table(rows, cols))
    tf = next((r for r in rows if r["contender"].startswith("tuneforge (defaults")), None)
    if tf:
        peer = "TRL fp32 no-checkpointing" if vs_tuned else "TRL default"
        report.targets = [
            common.target_line(f"LoRA tokens/s vs {peer} (wall)", tf["x TRL (wall)"], 1.5, unit="x"),
            common.target_line(f"LoRA tokens/s vs {peer} (CPU time)", tf["x TRL (CPU)"], 1.5, unit="x"),
            common.target_line(f"peak RSS vs {peer}", tf["RSS x TRL"], 1.0, higher_is_better=False, unit="x"),
            common.target_line(f"val loss vs {peer}", tf["val loss x TRL"], 1.02, higher_is_better=False, unit="x"),
            common.target_line("share of matmul peak (wall)", tf["% peak (wall)"], 35, unit="%"),
            common.target_line("share of matmul peak (CPU time)", tf["% peak (CPU)"], 35, unit="%"),
        ]
    common.finish(report, write=write)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="LoRA and full fine-tuning throughput: tuneforge vs TRL SFTTrainer.")
    p.add_argument("--full", action="store_true", help="the large size (tens of minutes on 2 cores)")
    p.add_argument("--only", nargs="*", help="run only contenders whose label contains one of these")
    p.add_argument("--threads", type=int, help="torch threads for every contender (default: torch's choice)")
    p.add_argument("--parallel", action="store_true",
                   help="run the contenders at the same time (fairer wall-clock ratios on a busy machine)")
    p.add_argument("--vs-tuned", action="store_true",
                   help="against TRL in fp32 without gradient checkpointing (its defaults are bf16 + checkpointing)")
    p.add_argument("--vs-best", action="store_true",
                   help="tuneforge LoRA vs TRL fp32, no checkpointing, packing=True, alternated and repeated "
                        "(bench/train_vs_best.py)")
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs for --vs-best")
    p.add_argument("--bf16", action="store_true",
                   help="with --vs-best, on a CPU with AVX512-BF16 or AMX: also tuneforge and TRL with the base "
                        "model's weights in bfloat16 (LoRA adapters float32), in the same alternation")
    p.add_argument("--omp-passive", action="store_true",
                   help="with --vs-best: OMP_WAIT_POLICY=PASSIVE for every run (threads sleep at once between "
                        "parallel regions: fewer CPU-s on a shared machine, fewer tokens/s; the runs before "
                        "2026-12-04 15:15 used it)")
    p.add_argument("--no-write", action="store_true", help="print the table but leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if importlib.util.find_spec("trl") is None:  # every mode measures against it: a table without it says nothing
        p.error("TRL, the peer this benchmark measures against, is not installed: make bench "
                "(or pip install -e '.[bench]')")
    if a.vs_best:
        from bench import train_vs_best

        if a.bf16:
            from tuneforge.models import native_bf16

            if not native_bf16():
                p.error("--bf16: this CPU has neither AVX512-BF16 nor AMX (bfloat16 would be emulated, slower)")
        train_vs_best.run("full" if a.full else "small", SIZES, SETTINGS, a.repeats, write=not a.no_write,
                          threads=a.threads, bf16=a.bf16, omp_passive=a.omp_passive)
        return
    run("full" if a.full else "small", a.only, write=not a.no_write, threads=a.threads,
        parallel=a.parallel, vs_tuned=a.vs_tuned)


if __name__ == "__main__":
    main()
