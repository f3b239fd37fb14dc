"""tuneforge LoRA against TRL's SFTTrainer in its best CPU configuration, alternated and repeated.

The issue's figure: LoRA tokens/s >= 2.0x TRL's SFTTrainer set up as well as it can be for a CPU (fp32,
no gradient checkpointing, ``packing=True``, completion-only loss), at <= 0.7x its peak RSS and the
same validation loss (+-2%), over the ``--full`` size (40 steps). On a shared machine one pair of runs
says little: the load changes from minute to minute. So the two contenders run in pairs, the order
flipping every repeat (TRL first, then tuneforge first, ...), each run a fresh process; every pair
gives one ratio, and the report is the median ratio with its spread (min..max) over the repeats,
plus the load average before and after.

The ceiling: every run gets a line with the FLOPs it computes per token, its achieved FLOP rate and its
share of the machine's fp32 ``torch.mm`` rate, measured in this process at the start and at the end of
the run with the contenders' torch thread count (formula and what each contender computes:
``bench/train_flops.py``), and the share tuneforge would need for 2x TRL's tokens/s.

Run it as ``python -m bench.train --full --vs-best`` (``--repeats`` to change the count). With ``--bf16`` (a
CPU with AVX512-BF16 or AMX) two more contenders join the alternation: tuneforge and TRL with the base model's
weights in bfloat16 (``model.dtype: bfloat16``; TRL: the model loaded in bfloat16, ``bf16=True``), the LoRA
adapters float32 in both; their ratios are reported against TRL fp32 (the issue's figure) and TRL bf16.

Allocator: the `tuneforge` command runs on TCMalloc (else jemalloc) where the system has one
(``tuneforge/allocator.py``), so tuneforge's contenders run on it; TRL runs on glibc's malloc as users run it,
and once more on tuneforge's allocator, so the table also shows what the allocator alone gives TRL.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import common, train_flops
from bench.data import write_splits
from bench.train_workers import worker_env
from tuneforge import allocator

TRL_BEST = "TRL SFTTrainer fp32, no checkpointing, packing=True"
TUNEFORGE = "tuneforge (defaults: packing)"
TRL_BF16 = "TRL SFTTrainer bf16 weights, no checkpointing, packing=True"
TUNEFORGE_BF16 = "tuneforge bf16 weights (model.dtype: bfloat16)"
TRL_ALLOCATOR = "TRL SFTTrainer fp32, no checkpointing, packing=True, on tuneforge's allocator (LD_PRELOAD)"
# label -> (worker, keyword arguments besides the data files and the size, runs on tuneforge's allocator). The
# `tuneforge` command restarts itself on TCMalloc or jemalloc where the system has one (tuneforge/allocator.py):
# its contenders run on it as the command would; TRL runs on glibc's malloc as users run it, and once more
# on the same allocator (TRL_ALLOCATOR), so the table shows what the allocator alone gives either tool.
CONTENDERS: dict[str, tuple[str, dict[str, Any], bool]] = {
    TRL_BEST: ("bench.train_workers:trl_worker", {"method": "lora", "packing": True, "tuned": True}, False),
    TUNEFORGE: ("bench.train_workers:tuneforge_worker", {"method": "lora", "packing": True}, True),
    TRL_BF16: ("bench.train_workers:trl_worker", {"method": "lora", "packing": True, "tuned": True, "bf16": "weights"},
               False),
    TUNEFORGE_BF16: ("bench.train_workers:tuneforge_worker", {"method": "lora", "packing": True, "bf16": "weights"},
                     True),
    TRL_ALLOCATOR: ("bench.train_workers:trl_worker", {"method": "lora", "packing": True, "tuned": True}, True),
}
# (tuneforge, TRL) pairs whose ratios are reported; the first is the figure
PAIRS = [(TUNEFORGE, TRL_BEST), (TUNEFORGE_BF16, TRL_BEST), (TUNEFORGE_BF16, TRL_BF16), (TUNEFORGE, TRL_ALLOCATOR),
         (TUNEFORGE_BF16, TRL_ALLOCATOR)]


MM_SIZE = 2048  # the matmul whose rate is "the machine's": 17 GFLOP, large enough for the BLAS's best blocking


def schedule(repeats: int, bf16: bool = False, trl_on_allocator: bool | None = None) -> list[tuple[int, str]]:
    """(repeat, contender) in run order: rounds whose order flips every repeat (A B, B A, A B, ...).

    Flipping cancels a steady drift of the load (rising or falling) out of the median ratio, which a
    fixed order would fold into it. ``trl_on_allocator`` (default: where tuneforge's allocator is found):
    TRL runs once more on that allocator.
    """
    if trl_on_allocator is None:
        trl_on_allocator = allocator.find() is not None
    pair = [TRL_BEST, TUNEFORGE, *((TRL_BF16, TUNEFORGE_BF16) if bf16 else ()),
            *((TRL_ALLOCATOR,) if trl_on_allocator else ())]
    return [(r, label) for r in range(repeats) for label in (pair if r % 2 == 0 else pair[::-1])]


def median_spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of per-repeat values (the spread says how much one repeat can be trusted)."""
    if not values:
        raise ValueError("no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def pair_ratios(runs: dict[tuple[int, str], dict[str, Any]], tuneforge: str = TUNEFORGE,
                trl_label: str = TRL_BEST) -> list[dict[str, float]]:
    """Per repeat with both runs: tuneforge / TRL for throughput and RSS, val-loss difference in %."""
    out = []
    for r in sorted({rep for rep, _ in runs}):
        tf, trl = runs.get((r, tuneforge)), runs.get((r, trl_label))
        if tf is None or trl is None:
            continue
        out.append({
            "repeat": r + 1,
            "tokens/s x TRL": tf["tokens_per_s"] / trl["tokens_per_s"],
            "tokens/CPU-s x TRL": tf["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"],
            "RSS x TRL": tf["peak_rss_mb"] / trl["peak_rss_mb"],
            # the peak when training ended, before the shared evaluator ran (absent from older runs)
            **({"training RSS x TRL": tf["train_peak_rss_mb"] / trl["train_peak_rss_mb"]}
               if "train_peak_rss_mb" in tf and "train_peak_rss_mb" in trl else {}),
            "val loss diff %": 100 * (tf["val_loss"] - trl["val_loss"]) / trl["val_loss"],
        })
    return out


def summary_rows(ratios: list[dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for key in ("tokens/s x TRL", "tokens/CPU-s x TRL", "RSS x TRL", "training RSS x TRL", "val loss diff %"):
        if any(key not in p for p in ratios):
            continue
        s = median_spread([p[key] for p in ratios])
        rows.append({"ratio (tuneforge / TRL)": key, "median": s["median"], "min": s["min"], "max": s["max"]})
    return rows


def run(size: str, sizes: dict, settings: dict, repeats: int = 3, write: bool = True,
        threads: int | None = None, bf16: bool = False, omp_passive: bool = False) -> common.Report:
    import torch

    cfg = sizes[size]
    if threads:
        torch.set_num_threads(threads)  # the matmul rate is measured with the contenders' thread count
    env = worker_env(threads, omp_passive)
    report = common.Report(
        name="train-vs-best", size=size,
        command="python -m bench.train --vs-best" + (" --full" if size == "full" else "") + f" --repeats {repeats}"
        + (" --bf16" if bf16 else "") + (" --omp-passive" if omp_passive else ""),
        title="Training: tuneforge LoRA vs TRL SFTTrainer in its best CPU configuration (alternated, repeated)")
    load_before = common.load_average()
    mm_before = common.matmul_rates(n=MM_SIZE)
    runs: dict[tuple[int, str], dict[str, Any]] = {}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="tf-bench-data-") as tmp:
        train_file, val_file = write_splits(Path(tmp), cfg["n_train"], cfg["n_val"])
        for rep, label in schedule(repeats, bf16):
            worker, extra, fast_malloc = CONTENDERS[label]
            print(f"\n=== repeat {rep + 1}/{repeats}: {label} ===", flush=True)
            kwargs = {"train_file": str(train_file), "val_file": str(val_file), "steps": cfg["steps"], **extra}
            try:
                runs[(rep, label)] = common.run_worker(worker, kwargs, env={**env, **(common.cli_env() if fast_malloc
                                                                                     else {})})
            except RuntimeError as exc:
                print(exc, flush=True)
                report.setup.append(f"repeat {rep + 1}, {label}: failed (see the run's output)")
                failed += 1
    load_after = common.load_average()
    mm_after = common.matmul_rates(n=MM_SIZE)
    build_report(report, runs, cfg, settings, repeats, load_before, load_after, bf16)
    report.setup.append("OpenMP wait policy: " + ("PASSIVE (--omp-passive: threads sleep at once between parallel "
                        "regions)" if omp_passive else "the library's default (OMP_WAIT_POLICY unset), as users run "
                        "both tools"))
    add_ceiling(report, runs, settings, repeats, mm_before, mm_after, torch.get_num_threads(), bf16)
    if failed and write:  # keep the last complete table rather than replace it with ratios that lack runs
        print(f"{failed} run(s) failed: BENCHMARKS.md left as it was")
    common.finish(report, write=write and not failed)
    return report


def build_report(report: common.Report, runs: dict[tuple[int, str], dict[str, Any]], cfg: dict, settings: dict,
                 repeats: int, load_before, load_after, bf16: bool = False) -> None:
    """Setup lines, the per-run table, the ratio summary and the targets, from whatever runs completed."""
    ratios = pair_ratios(runs)
    report.setup += [
        f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} (2 cores shared with other sessions)",
        f"{len(ratios)} of {repeats} repeats of the pair completed, order flipping every repeat (TRL first on odd repeats); each run a fresh "
        "process; ratio per repeat = tuneforge / TRL of the same repeat",
        f"data: {cfg['n_train']} training + {cfg['n_val']} validation lines (bench/data.py), {cfg['steps']} optimizer "
        f"steps of {settings['packed_batch']} packed row of {settings['max_length']} tokens, LoRA r=16 alpha=32 "
        "dropout 0 all-linear, lr 2e-4 cosine, 3% warmup, clip 1.0, fp32, no gradient checkpointing, loss on the "
        "answer tokens only (TRL: prompt/completion data, completion_only_loss=True, packing=True)",
        "timed = steps 2..S; tokens = non-padding tokens; val loss = the shared evaluator of bench/train_workers.py on "
        "each trained model in place; peak RSS = the worker process's whole peak, that evaluator included (the "
        "issue's figure); peak RSS, training = the same read when training returned, before the evaluator",
    ]
    if bf16:
        report.setup.append(
            "bf16 weights (--bf16, a CPU with AVX512-BF16 or AMX): the same runs with the base model loaded in "
            "bfloat16 (tuneforge `model.dtype: bfloat16`; TRL: `from_pretrained(dtype=bfloat16)` and `bf16=True`), "
            "both from the same bfloat16 safetensors file (as the hub ships SmolLM2), PEFT's LoRA adapters float32 in "
            "both; in the same alternation as the fp32 pair")
    library = allocator.find()
    report.setup.append(
        f"allocator: tuneforge's contenders on {library.name} (LD_PRELOAD), as the `tuneforge` command restarts "
        "itself (tuneforge/allocator.py); TRL on glibc's malloc, as users run it, and once more on the same "
        f"library ('{TRL_ALLOCATOR}'); each run's own in the column 'allocator'" if library else
        "allocator: glibc's malloc for every contender (no TCMalloc or jemalloc on this machine)")
    order = schedule(repeats, bf16)
    per_run = [{"repeat": rep + 1, "contender": label, "allocator": r.get("allocator", "system"),
                "timed tokens": r["tokens"], "wall s": r["seconds"],
                "tokens/s": r["tokens_per_s"], "tokens/CPU-s": r["tokens_per_cpu_s"],
                "peak RSS MB": r["peak_rss_mb"], "peak RSS MB, training": r.get("train_peak_rss_mb"),
                "val loss": r["val_loss"]}
               for (rep, label), r in sorted(runs.items(), key=lambda kv: order.index(kv[0]))]
    report.tables.append(common.table(per_run, ["repeat", "contender", "allocator", "timed tokens", "wall s", "tokens/s",
                                                "tokens/CPU-s", "peak RSS MB", "peak RSS MB, training",
                                                "val loss"]))
    summary = []
    for tf, trl in PAIRS:
        pair = pair_ratios(runs, tf, trl)
        if pair:
            summary += [{"tuneforge": tf, "TRL": trl, **row} for row in summary_rows(pair)]
    if summary:
        report.tables.append(common.table(summary, ["tuneforge", "TRL", "ratio (tuneforge / TRL)", "median", "min",
                                                    "max"]))
    for tf, trl in PAIRS:
        med = {row["ratio (tuneforge / TRL)"]: row["median"] for row in summary if (row["tuneforge"], row["TRL"]) == (tf, trl)}
        if not med:
            continue
        who = "" if (tf, trl) == PAIRS[0] else f" [{tf} vs {trl}]"
        report.targets += [
            common.target_line(f"LoRA tokens/s vs TRL best CPU config (wall, median){who}", med["tokens/s x TRL"], 2.0,
                               unit="x"),
            common.target_line(f"LoRA tokens/CPU-s vs TRL best CPU config (median){who}", med["tokens/CPU-s x TRL"], 2.0,
                               unit="x"),
            common.target_line(f"peak RSS vs TRL best CPU config (median){who}", med["RSS x TRL"], 0.7,
                               higher_is_better=False, unit="x"),
            common.target_line(f"|val loss difference| vs TRL (median){who}", abs(med["val loss diff %"]), 2.0,
                               higher_is_better=False, unit="%"),
        ]


def add_ceiling(report: common.Report, runs: dict[tuple[int, str], dict[str, Any]], settings: dict, repeats: int,
                mm_before: tuple[float, float], mm_after: tuple[float, float], n_threads: int,
                bf16: bool = False) -> None:
    """Per run: FLOPs per token, achieved GFLOP/s, share of the matmul rate; and what 2x would need."""
    if not runs:
        return
    from bench.train_workers import MODEL

    cfg = train_flops.model_config(MODEL)
    rate, cpu_rate = max(mm_before[0], mm_after[0]), max(mm_before[1], mm_after[1])
    rows, flops = [], {}
    for (rep, label), r in sorted(runs.items(), key=lambda kv: schedule(repeats, bf16).index(kv[0])):
        terms = train_flops.per_token(cfg, settings["lora"]["r"], r)  # both: LM head on loss positions
        flops[(rep, label)] = sum(terms.values())
        rows.append({"repeat": rep + 1, **train_flops.utilisation_row(label, terms, r, rate, cpu_rate)})
    report.setup.append(
        f"fp32 torch.mm {MM_SIZE}x{MM_SIZE}, {n_threads} torch thread(s) as the contenders: {mm_before[0]:.1f} "
        f"GFLOP/s ({mm_before[1]:.1f} per CPU-s) at the start, {mm_after[0]:.1f} ({mm_after[1]:.1f}) at the end; "
        f"the best of each used. FLOPs per token = 4 N_mm + 6 N_lora + 12 L d ctx + 4 V h x (LM-head positions / "
        "tokens): both contenders run the LM head on the loss positions only (TRL's fused LM head, tuneforge's "
        "chunked loss), each run's own count (bench/train_flops.py)")
    report.tables.append(common.table(rows, ["repeat", "contender", "MFLOP/token", "of which LM head", "GFLOP/s",
                                             "% of mm rate (wall)", "% of mm rate (CPU)"]))
    needs = []
    for rep in sorted({rep for rep, _ in runs}):
        if (rep, TUNEFORGE) in runs and (rep, TRL_BEST) in runs:
            trl_row = next(x for x in rows if x["repeat"] == rep + 1 and x["contender"] == TRL_BEST)
            needs.append(train_flops.needed_share(flops[(rep, TUNEFORGE)], flops[(rep, TRL_BEST)],
                                                  trl_row["% of mm rate (CPU)"]))
    if needs:
        report.setup.append(
            f"for 2x TRL's tokens/CPU-s tuneforge would need {statistics.median(needs):.0f}% of the matmul rate per "
            f"CPU-s (median over repeats; = 2 x F_tuneforge / F_TRL x TRL's share): above ~100% 2x is out of reach "
            "without computing fewer FLOPs")
