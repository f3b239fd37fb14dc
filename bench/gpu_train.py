"""Fine-tuning on a CUDA GPU: tuneforge against TRL's SFTTrainer, each run's MFU against the bf16 matmul
rate measured in the same run.

What runs, each contender in its own fresh process (``bench.train_workers``, as ``bench.train``):
SmolLM2-135M LoRA -- tuneforge's defaults against TRL's SFTTrainer with bf16 weights, packing and the same
variable-length flash kernel (TRL's padding-free batches need one; ``flash-attn`` cannot be installed
offline, so TRL gets tuneforge's registration of PyTorch's), alternated and repeated; tuneforge LoRA through
SDPA (what the variable-length kernel buys); full fine-tuning (fp32 weights, bf16 autocast) and QLoRA (4-bit
base from bitsandbytes) for both tools; and Gemma 3 270M LoRA (262,144-token vocabulary: the chunked
cross-entropy on CUDA) for both. Rows of ``--max-length`` tokens (2,048), ``--rows`` of them per optimizer
step (8), ``--steps`` steps with steps 2..S timed, the other settings ``bench.train_workers.SETTINGS``.

Ceilings, measured at the start of the run: a bf16 ``torch.mm`` of 8192^3 (median of 10 after 3 warm-ups,
CUDA events, random inputs) and a 2 GiB device-to-device copy (bytes read + written). MFU = model FLOPs
per token (``bench/train_flops.py``, attention counted over each example's own length) x tokens/s over
that matmul rate.

Weights: a lent GPU machine receives at most 64 MiB, so it gets each model's skeleton (config, tokenizer,
chat template) and builds the weights from the config at random (seed 0, saved once in bfloat16, loaded by
every contender). Tokens/s, memory and MFU do not depend on the values; the validation losses (~ln of the
vocabulary) then only check that both tools trained the same function.

    python -m bench.gpu_train --prepare DIR            # here: data splits + model skeletons
    python -m bench.gpu_train --from DIR --out R.json  # on the GPU machine
    python -m bench.gpu_train --report R.json          # here: the BENCHMARKS.md section from its numbers
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common, train_flops
from bench.train_workers import SETTINGS, worker_env

MODELS = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma3-270m"}
TRL = "bench.train_workers:trl_worker"
TF = "bench.train_workers:tuneforge_worker"
TRL_LORA = "TRL SFTTrainer LoRA, bf16 weights, packing, varlen kernel"
TF_LORA = "tuneforge LoRA (defaults)"
# (model key, label, worker, worker arguments, repeated): the repeated pair alternates, the rest run once
PLAN: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("smollm2", TRL_LORA, TRL, {"method": "lora", "tuned": True, "bf16": "weights", "attn": "varlen"}, True),
    ("smollm2", TF_LORA, TF, {"method": "lora"}, True),
    ("smollm2", "tuneforge LoRA, attn sdpa", TF, {"method": "lora", "attn": "sdpa"}, False),
    ("smollm2", "TRL SFTTrainer full, bf16 autocast, varlen kernel", TRL,
     {"method": "full", "tuned": True, "bf16": "autocast", "attn": "varlen"}, False),
    ("smollm2", "tuneforge full (defaults)", TF, {"method": "full"}, False),
    ("smollm2", "TRL SFTTrainer QLoRA, varlen kernel", TRL,
     {"method": "qlora", "tuned": True, "bf16": "weights", "attn": "varlen"}, False),
    ("smollm2", "tuneforge QLoRA (defaults)", TF, {"method": "qlora"}, False),
    ("gemma3", TRL_LORA, TRL, {"method": "lora", "tuned": True, "bf16": "weights", "attn": "varlen"}, False),
    ("gemma3", TF_LORA, TF, {"method": "lora"}, False),
]
SKELETON = ("config.json", "generation_config.json")


# ---------------------------------------------------------------------------------------------- here


def prepare(folder: Path, n_train: int, n_val: int) -> None:
    """Data splits and, per model, what builds it on a machine without the weights: config + tokenizer."""
    from bench.data import write_splits
    from tuneforge.models import load_tokenizer, resolve_model

    write_splits(folder / "data", n_train, n_val)
    for key, name in MODELS.items():
        src, dest = resolve_model(name), folder / key
        dest.mkdir(parents=True, exist_ok=True)
        for f in SKELETON:
            if (src / f).is_file():
                shutil.copy(src / f, dest / f)
        load_tokenizer(name).save_pretrained(dest)  # with its chat template (a base model's fallback one too)
    print(f"prepared {folder}")


# ------------------------------------------------------------------------------------------- the GPU


def ceilings() -> dict[str, float]:
    """bf16 matmul TFLOP/s (8192^3, median of 10 timed products) and device copy GB/s (read + written)."""
    import torch

    def timed(fn, reps: int) -> list[float]:
        out = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        return out

    n = 8192
    inputs = [(torch.randn(n, n, device="cuda", dtype=torch.bfloat16),
               torch.randn(n, n, device="cuda", dtype=torch.bfloat16)) for _ in range(2)]
    turn = iter(range(10**6))  # alternate between two input pairs

    def product() -> None:
        torch.mm(*inputs[next(turn) % 2])

    timed(product, 3)  # warm-up
    mm = statistics.median(timed(product, 10))
    inputs.clear()
    src = torch.randn(2**29, device="cuda")  # 2 GiB of fp32
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    copy = statistics.median(timed(lambda: dst.copy_(src), 10))
    return {"bf16_mm_tflops": 2 * n**3 / mm / 1e12, "copy_gbps": 2 * src.numel() * 4 / copy / 1e9}


def random_model(skeleton: Path, dest: Path, seed: int = 0) -> Path:
    """The skeleton's model with random weights (seed), saved in bfloat16 beside its tokenizer files."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(skeleton))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(dest))
    for f in skeleton.iterdir():
        if f.name != "config.json" and f.is_file():
            shutil.copy(f, dest / f.name)
    return dest


def varlen_check(model_dir: Path, train_file: Path, max_length: int, rows: int) -> dict[str, float]:
    """The real variable-length kernel against SDPA on one packed micro-batch of the training data:
    relative difference of the summed loss and of the gradient norms, and each one's forward+backward ms."""
    import torch

    from tuneforge.config.recipe import ModelConfig
    from tuneforge.models import load_tokenizer, varlen_attention
    from tuneforge.models.load import load_model
    from tuneforge.train.data import tokenize_file
    from tuneforge.train.packing import collate, make_rows
    from tuneforge.train.steps import loss_sum

    tokenizer = load_tokenizer(str(model_dir))
    examples = tokenize_file(tokenizer, train_file, max_length)
    batch = collate(examples, make_rows(examples, max_length, True)[:rows], tokenizer.pad_token_id or 0)
    out: dict[str, float] = {}
    results = {}
    for attn in ("sdpa", "varlen"):
        model = load_model(ModelConfig(name=str(model_dir), device="cuda", dtype="bfloat16", attn_implementation=attn),
                           is_trainable=True)
        times = []
        for _ in range(3 + 5):  # 3 warm-ups (the 2026-12-04 calls timed one step after one), median of 5
            model.zero_grad()
            torch.cuda.synchronize()
            t = time.perf_counter()
            loss = loss_sum(model, batch)
            loss.backward()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t) * 1e3)
        out[f"{attn}_fwd_bwd_ms"] = statistics.median(times[3:])
        grad = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
        results[attn] = (loss.item(), grad.item())
        varlen_attention.use_sdpa(model)
        del model
        torch.cuda.empty_cache()
    (l0, g0), (l1, g1) = results["sdpa"], results["varlen"]
    out.update({"loss_rel_diff": abs(l1 - l0) / abs(l0), "grad_norm_rel_diff": abs(g1 - g0) / abs(g0), "timed": 5,
                "tokens": batch.n_tokens, "rows": rows})
    return out


def selected(key: str, label: str, only: list[str] | None) -> bool:
    """``only`` entries: a label substring, or ``model:substring`` (``gemma3:`` = all of that model)."""
    if not only:
        return True
    for o in only:
        model, _, part = o.rpartition(":") if ":" in o else ("", "", o)
        if (not model or model == key) and part in label:
            return True
    return False


def run_order(keys: list[str], only: list[str] | None, repeats: int) -> list[tuple[int, tuple]]:
    """(repeat, plan entry) in run order, model by model: the repeated pair first, its order flipping every
    repeat (a drift of the machine's speed cancels out of the median), then the rest once."""
    order: list[tuple[int, tuple]] = []
    for key in keys:
        plan = [p for p in PLAN if p[0] == key and selected(key, p[1], only)]
        pair = [p for p in plan if p[4]]
        for r in range(repeats if pair else 0):
            order += [(r, p) for p in (pair if r % 2 == 0 else pair[::-1])]
        order += [(0, p) for p in plan if not p[4]]
    return order


def run_all(source: Path, out: Path, steps: int, rows: int, max_length: int, repeats: int,
            only: list[str] | None, models_order: list[str] | None = None, check: bool = True) -> dict[str, Any]:
    """Every contender of ``PLAN`` (``only``: see ``selected``) in its own process, model by model
    (``models_order``), after the ceilings and (``check``) the variable-length kernel against SDPA."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu_train needs a CUDA GPU (this machine has none)")
    data = source / "data"
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(), "machine": common.machine(), "versions": common.versions(),
        "settings": {**SETTINGS, "steps": steps, "rows": rows, "max_length": max_length, "repeats": repeats},
        "runs": [], "failed": [],
    }
    result["ceilings"] = ceilings()
    print(f"ceilings: {result['ceilings']}", flush=True)
    save = lambda: out.write_text(json.dumps(result, indent=1))  # noqa: E731 - after every run: a killed run keeps the rest
    save()
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    keys = [k for k in (models_order or list(MODELS)) if (source / k).is_dir()
            and any(selected(k, p[1], only) for p in PLAN if p[0] == k)]
    models = {key: random_model(source / key, work / key) for key in keys}
    if check and "smollm2" in models:
        try:
            result["varlen_check"] = varlen_check(models["smollm2"], data / "train.jsonl", max_length, rows)
        except Exception as exc:  # the runs below still say what they can
            result["varlen_check"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"varlen vs sdpa: {result['varlen_check']}", flush=True)
        save()
    for r, (key, label, worker, kwargs, _) in run_order(list(models), only, repeats):
        args = {"train_file": str(data / "train.jsonl"), "val_file": str(data / "val.jsonl"), "steps": steps,
                "packing": True, "model": str(models[key]), "device": "cuda", "rows": rows,
                "max_length": max_length, **kwargs}
        t = time.perf_counter()
        try:
            run = common.run_worker(worker, args, env=worker_env(None, False), timeout=600)
        except Exception as exc:
            result["failed"].append({"model": key, "contender": label, "error": str(exc)[:300]})
            print(f"FAILED {key} {label}: {exc}", flush=True)
            save()
            continue
        run.update({"model": key, "contender": label, "repeat": r, "method": kwargs["method"],
                    "process_seconds": time.perf_counter() - t})
        result["runs"].append(run)
        print(f"{key} | {label} | {run['tokens_per_s']:,.0f} tokens/s | "
              f"{run.get('gpu_peak_allocated_mb', 0) / 1024:.2f} GB | val {run['val_loss']:.4f}", flush=True)
        save()
    shutil.rmtree(work, ignore_errors=True)
    return result


# -------------------------------------------------------------------------------------------- report


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several calls' results as one: each run keeps its call's number and that call's matmul rate."""
    merged = {**results[0], "runs": [], "failed": [], "calls": results}
    for i, res in enumerate(results, 1):
        merged["runs"] += [{**r, "call": i, "peak_tflops": res["ceilings"]["bf16_mm_tflops"]} for r in res["runs"]]
        merged["failed"] += [{**f, "call": i} for f in res.get("failed", [])]
    return merged


def mfu_rows(result: dict[str, Any], configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per contender and call (median over its repeats): tokens/s, the ratio to TRL's run of the
    same method and model in the same call, achieved TFLOP/s and MFU against that call's bf16 matmul rate,
    GPU memory."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for run in result["runs"]:
        groups.setdefault((run.get("call", 1), run["model"], run["contender"]), []).append(run)
    rows = []
    for (call, key, label), runs in groups.items():
        peak = runs[0].get("peak_tflops") or result["ceilings"]["bf16_mm_tflops"]
        method = runs[0]["method"]
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        flops = sum(train_flops.per_token(configs[key], SETTINGS["lora"]["r"], runs[0], per_example=True,
                                          method=method).values())
        rows.append({"call": call, "model": key, "contender": label, "method": method, "repeats": len(runs),
                     "tokens/s": tps, "collate ms": statistics.median(r.get("collate_ms", float("nan")) for r in runs),
                     "tokens/s min..max": f"{min(r['tokens_per_s'] for r in runs):,.0f}.."
                                          f"{max(r['tokens_per_s'] for r in runs):,.0f}",
                     "MFLOP/token": flops / 1e6, "TFLOP/s": flops * tps / 1e12,
                     "MFU %": 100 * flops * tps / 1e12 / peak,
                     "GPU peak GB": max(r.get("gpu_peak_allocated_mb", 0) for r in runs) / 1024,
                     "val loss": statistics.median(r["val_loss"] for r in runs)})
    for row in rows:
        trl = next((t for t in rows if (t["call"], t["model"], t["method"]) == (row["call"], row["model"], row["method"])
                    and t["contender"].startswith("TRL")), None)
        row["x TRL"] = common.ratio(row["tokens/s"], trl and trl["tokens/s"])
        row["memory x TRL"] = common.ratio(row["GPU peak GB"], trl and trl["GPU peak GB"])
    return rows


def report(result: dict[str, Any], configs: dict[str, dict[str, Any]]) -> common.Report:
    s = result["settings"]
    rep = common.Report(name="gpu_train", title="Fine-tuning on a GPU: tuneforge vs TRL, MFU", size="full",
                        command="python -m bench.gpu_train --from DIR (prepared by --prepare DIR)",
                        machine=result["machine"], versions=result["versions"])
    rep.setup = [
        f"call {i} ({res['machine'].get('date', '?')}): {res['gpu']}; measured in that call: bf16 matmul "
        f"{res['ceilings']['bf16_mm_tflops']:.0f} TFLOP/s (8192^3 torch.mm, median of 10), device copy "
        f"{res['ceilings']['copy_gbps']:,.0f} GB/s (read + written); each call a fresh machine, ratios only "
        "within a call" for i, res in enumerate(result.get("calls", [result]), 1)
    ] + [
        "collate ms: host time building one batch (on the step's critical path in both tools)",
        f"{s['steps']} optimizer steps of {s['rows']} packed rows of {s['max_length']} tokens, steps 2..S timed "
        f"(CUDA synchronised at each step's end); LoRA r={s['lora']['r']} alpha={s['lora']['alpha']} all-linear, "
        f"lr {s['lr']['lora']} (LoRA/QLoRA) / {s['lr']['full']} (full), cosine, clip {s['max_grad_norm']}",
        "weights: random, built from each model's config.json (seed 0, bfloat16) and loaded by every contender "
        "(the lent GPU machine takes at most 64 MiB, too little for the weights): tokens/s, memory and MFU do "
        "not depend on the values; the validation loss only checks that both tools trained the same function",
        "data: the real review mix of bench.train (bench/data.py), identical JSONL files for every contender",
        "MFU: model FLOPs per token (bench/train_flops.py: 4 per frozen weight, 6 per trained one, LoRA 6 r(in+out), "
        "attention 12 L d x each example's own length, LM head on loss positions) x tokens/s / the bf16 matmul rate above",
        "GPU peak GB: torch.cuda.max_memory_allocated over training (the evaluation after it excluded)",
        "TRL: SFTTrainer with packing=True (its padding-free batches), bf16, no gradient checkpointing, and "
        "attn_implementation set to tuneforge's registration of PyTorch's variable-length flash kernel "
        "(with SDPA, TRL's one flat row per batch would attend over all of its 16k tokens)",
    ]
    check = next((r["varlen_check"] for r in result.get("calls", [result]) if r.get("varlen_check")), {})
    if "error" in check:
        rep.setup.append(f"varlen kernel vs SDPA check: failed ({check['error']})")
    elif check:
        rep.setup.append(
            f"varlen kernel vs SDPA on one micro-batch ({check['rows']} rows, {check['tokens']:,} tokens): loss "
            f"relative difference {check['loss_rel_diff']:.1e}, gradient norm {check['grad_norm_rel_diff']:.1e}; "
            f"forward+backward {check['sdpa_fwd_bwd_ms']:.0f} ms (SDPA) vs {check['varlen_fwd_bwd_ms']:.0f} ms "
            + (f"(median of {check['timed']} after 3 warm-ups)" if "timed" in check
               else "(one step after one warm-up: not a measurement)"))
    for f in result.get("failed", []):
        rep.setup.append(f"failed: {f['model']} {f['contender']}: {f['error']}")
    cols = ["call", "model", "contender", "repeats", "tokens/s", "tokens/s min..max", "x TRL", "MFLOP/token",
            "TFLOP/s", "MFU %", "GPU peak GB", "memory x TRL", "collate ms", "val loss"]
    rep.tables.append(common.table(mfu_rows(result, configs), cols))
    return rep


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fine-tuning throughput and MFU on a CUDA GPU: tuneforge vs TRL SFTTrainer.")
    p.add_argument("--prepare", type=Path, metavar="DIR", help="write the data splits and model skeletons to DIR")
    p.add_argument("--from", dest="source", type=Path, metavar="DIR", help="run every contender from a prepared DIR")
    p.add_argument("--out", type=Path, default=Path("gpu_train.json"), help="results file (written after every run)")
    p.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                   help="write the BENCHMARKS.md section from results files (one per call)")
    p.add_argument("--models", nargs="+", choices=list(MODELS), help="models to run, in this order")
    p.add_argument("--no-check", action="store_true", help="skip the variable-length kernel vs SDPA check")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rows", type=int, default=8, help="packed rows per optimizer step")
    p.add_argument("--max-length", type=int, default=2048, help="tokens per packed row")
    p.add_argument("--repeats", type=int, default=2, help="alternated pairs of the LoRA comparison")
    p.add_argument("--n-train", type=int, default=6000, help="training lines written by --prepare")
    p.add_argument("--only", nargs="*", help="run only contenders whose label contains one of these "
                   "(model:text for one model's; gemma3: for all of gemma3's)")
    p.add_argument("--no-write", action="store_true", help="with --report: print, leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.prepare:
        prepare(a.prepare, a.n_train, 64)
    elif a.source:
        result = run_all(a.source, a.out, a.steps, a.rows, a.max_length, a.repeats, a.only, a.models, not a.no_check)
        configs = {k: json.loads((a.source / k / "config.json").read_text()) for k in MODELS if (a.source / k).is_dir()}
        common.finish(report(result, configs), write=False)
    elif a.report:
        configs = {k: train_flops.model_config(name) for k, name in MODELS.items()}
        merged = merge([json.loads(f.read_text()) for f in a.report])
        common.finish(report(merged, configs), write=not a.no_write)
    else:
        p.error("give --prepare DIR, --from DIR or --report JSON")


if __name__ == "__main__":
    main()
