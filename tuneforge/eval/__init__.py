"""tuneforge.eval: metrics on the test split, zero/few-shot baselines, forgetting probes, reports.

Public API (what the CLI and the quickstart call)::

    generate_batch(model, tokenizer, conversations, max_new_tokens=32, batch_size=16,
                   temperature=0.0, seed=0, stop=None) -> list[str]
        Batched chat generation: left padding, KV cache, greedy or seeded sampling, stop strings.

    evaluate_split(model, tokenizer, test_file, *, system, train_file=None, shots=0,
                   max_examples=None, cfg) -> ResultRow
        Score one system on a prepared test split (accuracy with label extraction for
        classification; exact match, token F1, ROUGE-L, BLEU/chrF otherwise; reference loss and
        perplexity), with bootstrap intervals and a per-task breakdown. k-shot examples come from
        train_file, never from the test split. Per-example predictions: pop_predictions(row).

    run_forgetting(model, tokenizer, cfg, system) -> list[ResultRow]
        General-ability probes (ARC-Easy, BoolQ, MMLU subjects, ...) scored by log-likelihood.
    compare_forgetting(rows) -> list[ForgettingDelta]
        Tuned-minus-base deltas with paired bootstrap intervals and a significant-drop flag.

    evaluate_run(recipe, run, test_file, train_file=None, adapter_dir=None) -> list[ResultRow]
        Base zero-shot, base k-shot (eval.shots), tuned (adapter or full model in the run) and
        forgetting for base and tuned -> <run>/eval/results.json, <run>/eval/predictions-<system>.jsonl.

    write_report(run_path) -> Path        <run>/report.html, self-contained (inline SVG), with the
                                          verdict "Was fine-tuning worth it?"
    compare_runs(paths) -> str            one table of every metric across runs and systems
    side_by_side(paths, n=3, ids=None)    the same prompts answered by every system
"""

from __future__ import annotations

import importlib
from typing import Any

# The recipe schema (tuneforge.config) composes every stage's config, ours included: load it first so
# that importing tuneforge.eval.<module> on its own never meets a half-initialised tuneforge.config.
import tuneforge.config  # noqa: F401

# Loaded on first use: the recipe schema imports tuneforge.eval.config, so importing the whole
# package here would be circular (and would make every recipe load pull in numpy and the metrics).
_EXPORTS = {
    "EvalConfig": "tuneforge.eval.config",
    "ForgettingDelta": "tuneforge.eval.forgetting",
    "MetricValue": "tuneforge.eval.results",
    "ResultRow": "tuneforge.eval.results",
    "compare_forgetting": "tuneforge.eval.forgetting",
    "compare_runs": "tuneforge.eval.compare",
    "evaluate_run": "tuneforge.eval.runner",
    "evaluate_split": "tuneforge.eval.evaluate",
    "generate_batch": "tuneforge.eval.generation",
    "load_examples": "tuneforge.eval.evaluate",
    "pop_predictions": "tuneforge.eval.evaluate",
    "read_results": "tuneforge.eval.results",
    "run_forgetting": "tuneforge.eval.forgetting",
    "side_by_side": "tuneforge.eval.compare",
    "write_report": "tuneforge.eval.report",
    "write_results": "tuneforge.eval.results",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tuneforge.eval' has no attribute {name!r}")


__all__ = [
    "EvalConfig",
    "ForgettingDelta",
    "MetricValue",
    "ResultRow",
    "compare_forgetting",
    "compare_runs",
    "evaluate_run",
    "evaluate_split",
    "generate_batch",
    "load_examples",
    "pop_predictions",
    "read_results",
    "run_forgetting",
    "side_by_side",
    "write_report",
    "write_results",
]
