"""Memory benchmark: the training run's printed estimate against the peak RSS it then reaches.

Each configuration trains the bundled SmolLM2-135M-Instruct for 10 optimizer steps (``--steps``) in a
fresh process, on the training benchmark's real length mix (``bench.data``), without validation. Ten,
because glibc's heap keeps growing for several steps before it levels off, and the estimate is for the
run's peak: SmolLM2 LoRA, 2 rows x ~370 tokens peaked at 2.37 GB after 2 steps, 2.41 after 4, 2.88-2.90
after 10 and 30; 1 x 768 tokens 2.71, 2.85, 2.92-3.01, 2.99 (2026-12-04; every configuration's 10- and
30-step peaks within 1.5%). The runs before then trained 2 steps and read a transient. The estimate is the
one the memory planner chose its plan by (a budget of 64 GB, so the recipe's own split is kept); the peak
is the largest per-phase ``VmHWM``. Error = (estimate - peak) / peak.

    python -m bench.memory            # every configuration, a few minutes on an idle 2-core machine
    python -m bench.memory --only lora-long --steps 30
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import common
from bench.data import write_splits
from bench.memory_phases import PhaseRecorder

MODEL = "smollm2-135m-instruct"
CONFIGS: dict[str, dict[str, Any]] = {
    # name: train overrides (all packed rows unless packing is false; "model": tiny is the test suite's
    # randomly initialised 2-layer model with the bundled tokenizer, where the runtime dominates)
    "tiny-lora": {"model": "tiny", "method": "lora", "batch_size": 4, "max_length": 256},
    "tiny-full-unpacked": {"model": "tiny", "method": "full", "batch_size": 4, "max_length": 256, "packing": False},
    "lora-short": {"method": "lora", "batch_size": 1, "max_length": 256},
    "lora-short-ckpt": {"method": "lora", "batch_size": 1, "max_length": 256, "gradient_checkpointing": True},
    "lora-long": {"method": "lora", "batch_size": 1, "max_length": 768},
    "lora-unpacked": {"method": "lora", "batch_size": 4, "max_length": 256, "packing": False},
    "lora-long-ckpt": {"method": "lora", "batch_size": 1, "max_length": 768, "gradient_checkpointing": True},
    # 48 examples: with the default 24, packed into 384-token rows, step 2 got one 57-token row, so the
    # allocator's second-step growth (what the estimate's factor covers) never showed (2026-12-03: +27%)
    "lora-2rows": {"method": "lora", "batch_size": 2, "max_length": 384, "examples": 48},
    "full-short": {"method": "full", "batch_size": 1, "max_length": 256},
    "full-ckpt": {"method": "full", "batch_size": 1, "max_length": 512, "gradient_checkpointing": True},
}


def worker(train_file: str, overrides: dict[str, Any], threads: int, model: str = MODEL,
           steps: int = 10) -> dict[str, Any]:
    """Train ``steps`` steps with ``overrides``; return the planner's estimate and what the steps saw."""
    from tuneforge.config import load_recipe
    from tuneforge.runs import create_run
    from tuneforge.train import api, loop, train
    from tuneforge.train.memory import ModelShapes

    out = tempfile.mkdtemp(prefix="tf-bench-mem-")
    settings = {"model.name": model, "run.output_dir": out, "run.name": "mem", "train.max_steps": steps,
                "train.eval_at_start": False, "train.save_every": 10**6, "train.memory_limit_gb": 64,
                "train.num_threads": threads, "train.lora.dropout": 0.0, "eval.after_train": False}
    settings.update({f"train.{k}": v for k, v in overrides.items()})
    recipe = load_recipe(None, settings)
    plans = []
    inner = api.choose_plan
    phases = PhaseRecorder()
    phases.mark("imports")

    def recording(*args, **kwargs):
        phases.mark("model loaded, data tokenized")
        plan = inner(*args, **kwargs)
        plans.append(plan)
        return plan

    seen = []  # (rows, width, tokens carrying loss) of every micro-batch trained on
    inner_collate = loop.collate

    def collating(*args, **kwargs):
        b = inner_collate(*args, **kwargs)
        seen.append((int(b.input_ids.shape[0]), int(b.input_ids.shape[1]), b.n_target))
        return b

    shapes = []  # the model's ModelShapes, as the planner read them
    inner_estimator = api._estimator

    def estimator(model, *args, **kwargs):
        shapes.append(asdict(ModelShapes.of(model)))
        return inner_estimator(model, *args, **kwargs)

    api.choose_plan = recording
    api._estimator = estimator
    loop.collate = collating
    phases.install()
    try:
        result = train(recipe, create_run(recipe, "bench-memory"), Path(train_file), None)
        phases.mark("end of training (outputs written)")
    finally:
        phases.remove()
        api.choose_plan = inner
        api._estimator = inner_estimator
        loop.collate = inner_collate
        shutil.rmtree(out, ignore_errors=True)
    est = plans[0].estimate
    return {"shapes": shapes[0],"estimate_gb": est.total / 2**30, "terms": {k: v / 2**30 for k, v in vars(est).items()},
            "parts": est.describe(), "tokens": result.train_tokens, "steps": result.steps,
            "phases": phases.rows, "micro_batches": seen,
            # Resetting VmHWM (per phase) also resets what ru_maxrss reads: the run's peak is the phases' largest.
            "peak_mb": max(p["peak_mb"] for p in phases.rows)}


def run(only: list[str] | None = None, threads: int = 2, write: bool = True,
        raw: Path | None = None, steps: int = 10) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="tf-bench-mem-data-"))
    train_file, _ = write_splits(tmp, 24, 2)
    tiny = _tiny_model(tmp / "tiny-model")
    rows = []
    for name, overrides in CONFIGS.items():
        if only and name not in only:
            continue
        print(f"== {name}: {overrides}", flush=True)
        train_overrides = {k: v for k, v in overrides.items() if k not in ("model", "examples")}
        model = tiny if overrides.get("model") == "tiny" else MODEL
        data = train_file if "examples" not in overrides else write_splits(tmp / name, overrides["examples"], 2)[0]
        try:
            res = common.run_worker("bench.memory:worker", {"train_file": str(data), "overrides": train_overrides,
                                                            "threads": threads, "model": model, "steps": steps},
                                    env=common.cli_env(), timeout=1800)  # the allocator `tuneforge train` runs on
        except Exception as exc:  # a failed configuration is reported, not hidden
            print(f"{name} failed: {exc}", flush=True)
            rows.append({"config": name, "settings": _settings(overrides), "estimate GB": None, "peak RSS GB": None})
            continue
        peak = max(res["peak_mb"], res["peak_rss_mb"]) / 1024
        rows.append({"config": name, "settings": _settings(overrides), f"tokens ({steps} steps)": res["tokens"],
                     "estimate GB": res["estimate_gb"], "peak RSS GB": peak,
                     "error %": 100 * (res["estimate_gb"] - peak) / peak})
        print(f"{name}: estimate {res['estimate_gb']:.2f} GB ({res['parts']}), peak {peak:.2f} GB; "
              f"micro-batches (rows, width, targets) {res['micro_batches']}", flush=True)
        for ph in res["phases"]:
            print(f"    {ph['phase']:<40} RSS {ph['rss_mb']:>6} MB  peak during {ph['peak_mb']:>6} MB  "
                  f"file {ph['file_mb']:>5} MB", flush=True)
        if raw:
            raw_rows = json.loads(raw.read_text()) if raw.is_file() else {}
            raw_rows[name] = {"overrides": overrides, **res}
            raw.write_text(json.dumps(raw_rows, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    cols = ["config", "settings", f"tokens ({steps} steps)", "estimate GB", "peak RSS GB", "error %"]
    errors = [abs(r["error %"]) for r in rows if r.get("error %") is not None]
    report = common.Report(
        name="memory", title="Training memory: estimate vs peak RSS", size="small",
        setup=[f"bundled {MODEL}, {steps} optimizer steps per configuration, each in a fresh process, "
               f"{threads} threads, no validation; the estimate is the memory planner's",
               "allocator: " + (common.cli_env().get("LD_PRELOAD", "") or "glibc's malloc") + ", as the `tuneforge` "
               "command runs on (tuneforge/allocator.py)",
               "error = (estimate - peak RSS) / peak RSS"],
        tables=[common.table(rows, cols)],
        targets=[common.target_line("largest |error|", max(errors) if errors else None, 15,
                                    higher_is_better=False, unit="%")],
    )
    common.finish(report, write=write)
    return rows


def estimate_from_raw(res: dict[str, Any], shapes: dict[str, int]) -> Any:
    """The estimate of the heaviest micro-batch the worker trained on, with the current formula."""
    from tuneforge.train.memory import ModelShapes, estimate_batch

    ckpt = bool(res["overrides"].get("gradient_checkpointing", False))
    ests = [estimate_batch(ModelShapes(**shapes), rows, width, ckpt, 4, targets, chunked_logits=True)
            for rows, width, targets in res["micro_batches"]]
    return max(ests, key=lambda e: e.total)


def table_from_raw(paths: list[Path], write: bool) -> None:
    """Re-estimate measured configurations (``--raw`` files) with the current formula: the table again."""
    raw: dict[str, Any] = {}
    for p in paths:
        raw.update(json.loads(p.read_text()))
    rows = []
    for name in CONFIGS:
        if name not in raw or raw[name].get("shapes") is None:
            continue
        res = raw[name]
        est = estimate_from_raw(res, res["shapes"])
        peak = max(res.get("peak_mb", 0), max(p["peak_mb"] for p in res["phases"])) / 1024
        rows.append({"config": name, "settings": _settings(res["overrides"]), "steps": res.get("steps", 2), "tokens": res["tokens"],
                     "estimate GB": est.total / 2**30, "peak RSS GB": peak,
                     "error %": 100 * (est.total / 2**30 - peak) / peak, "terms": est.describe()})
        print(f"{name:<20} est {est.total / 2**30:5.2f} peak {peak:5.2f} err {rows[-1]['error %']:+6.1f}%  "
              f"{est.describe()}")
    return rows


def _tiny_model(folder: Path) -> str:
    from tuneforge.models import load_tokenizer
    from tuneforge.models.tiny import save_tiny_model

    return str(save_tiny_model(folder, load_tokenizer(MODEL)))


def _settings(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="run only these configurations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per configuration (the heap levels off "
                                                          "after several; the runs before 2026-12-04 16:19 used 2)")
    p.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    p.add_argument("--from-raw", type=Path, nargs="*", help="measure nothing: re-estimate the configurations "
                                                              "kept in these --raw files with the current formula")
    p.add_argument("--raw", type=Path, help="also keep every configuration's measurements (phases, micro-batches) "
                                            "in this JSON file, merged by configuration name")
    a = p.parse_args(argv)
    if a.from_raw:
        table_from_raw(a.from_raw, write=not a.no_write)
        return
    run(a.only, a.threads, write=not a.no_write, raw=a.raw, steps=a.steps)


if __name__ == "__main__":
    main()
