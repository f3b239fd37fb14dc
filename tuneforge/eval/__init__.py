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

    ForgettingSuite(tokenizer, cfg, seed, task_answers=()).run(model, system) -> list[ResultRow]
        Forgetting probes, the base model first (it is the drift reference), then each tuned model:
        drift (KL from the base on general text and chat), general loss (on reference answers of
        general instructions), behaviour (answers to general prompts: collapse to the task's labels or
        to one answer, short answers, variety, length) and multiple-choice benchmarks (ARC-Easy, BoolQ,
        MMLU subjects, ...) scored by log-likelihood. run_forgetting(model, tokenizer, cfg, system,
        suite=None) is the one-call form.
    compare_forgetting(rows) -> list[ForgettingDelta]
        Tuned-minus-base changes with paired bootstrap intervals, a flag for changes for the worse, the
        smallest change each sample detects and the inputs an observed change would need;
        reading(delta) says it in plain words.

    evaluate_run(recipe, run, test_file, train_file=None, adapter_dir=None) -> list[ResultRow]
        Base zero-shot, base k-shot (eval.shots), tuned (adapter or full model in the run) and
        forgetting for base and tuned -> <run>/eval/results.json, <run>/eval/predictions-<system>.jsonl.

    write_report(run_path) -> Path        <run>/report.html, self-contained (inline SVG), with the
                                          verdict "Was fine-tuning worth it?"
    compare_runs(paths) -> str            one table of every metric across runs and systems
    side_by_side(paths, n=3, ids=None)    the same prompts answered by every system
"""

from __future__ import annotations

from tuneforge.config.eval import EvalConfig
from tuneforge.eval.compare import compare_runs, side_by_side
from tuneforge.eval.evaluate import evaluate_split, load_examples, pop_predictions
from tuneforge.eval.forgetting import (
    ForgettingDelta,
    ForgettingSuite,
    compare_forgetting,
    run_forgetting,
)
from tuneforge.eval.forgetting_reading import reading
from tuneforge.eval.generation import generate_batch
from tuneforge.eval.report import write_report
from tuneforge.eval.results import MetricValue, ResultRow, read_results, write_results
from tuneforge.eval.runner import evaluate_run

__all__ = [
    "EvalConfig",
    "ForgettingDelta",
    "ForgettingSuite",
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
    "reading",
    "run_forgetting",
    "side_by_side",
    "write_report",
    "write_results",
]
