"""Evaluate a model on the test split: zero-shot, k-shot (examples from train, never test) or tuned.

One :class:`ResultRow` per call, with every metric's bootstrap interval, a per-task breakdown in
``extra["per_task"]`` and the prompt tokens one request costs. Per-example predictions ride along in
``extra["predictions"]``; take them out with :func:`pop_predictions` before writing results.json.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge import atomic
from tuneforge.config.eval import EvalConfig
from tuneforge.data.chat import prompt_messages
from tuneforge.errors import UserError
from tuneforge.eval.generation import generate_batch, prompt_token_counts, render_prompt
from tuneforge.eval.metrics import ALL_METRICS, PER_EXAMPLE, default_metrics, metric_value, score_example
from tuneforge.eval.results import MetricValue, ResultRow

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_examples(path: str | Path, max_examples: int | None = None) -> list[dict[str, Any]]:
    """Read a prepared split (``{"messages": [...], "meta": {...}}`` lines, checked by the data stage)."""
    from tuneforge.data.io import read_examples

    p = Path(path)
    rows = []
    for lineno, row in enumerate(read_examples(p), 1):
        meta = row.get("meta") or {}
        meta.setdefault("id", f"{p.stem}-{lineno}")
        meta.setdefault("task", "default")
        row["meta"] = meta
        rows.append(row)
        if max_examples is not None and len(rows) >= max_examples:
            break
    if not rows:
        raise UserError(f"{p}: no examples")
    return rows


def pick_shots(train: list[dict[str, Any]], k: int, seed: int, task: str | None = None) -> list[dict[str, Any]]:
    """k training examples, the same for every request (deterministic in ``seed``).

    For classification the shots cycle through the labels so that a 3-shot prompt on a two-label task
    shows both labels rather than, by chance, only one.
    """
    if k <= 0:
        return []
    pool = [r for r in train if task is None or r["meta"].get("task") == task] or train
    rng = random.Random(seed)
    pool = sorted(pool, key=lambda r: str(r["meta"].get("id")))
    rng.shuffle(pool)
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in pool:
        by_label[str(r["meta"].get("label"))].append(r)
    if len(by_label) < 2:
        return pool[:k]
    labels = sorted(by_label)
    rng.shuffle(labels)
    shots: list[dict[str, Any]] = []
    while len(shots) < min(k, len(pool)):
        for label in labels:
            if by_label[label] and len(shots) < k:
                shots.append(by_label[label].pop())
    return shots


def with_shots(prompt: list[dict[str, Any]], shots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert shots as earlier user/assistant turns, after the prompt's system message."""
    system = [m for m in prompt[:1] if m["role"] == "system"]
    demo = [m for s in shots for m in s["messages"] if m["role"] != "system"]
    return system + demo + prompt[len(system) :]


def reference_losses(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], refs: list[str], batch_size: int,
    max_batch_tokens: int | None = None,
) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, token count) of each reference answer after its prompt."""
    from tuneforge.eval.loglik import score_continuations

    pairs = [(render_prompt(tokenizer, p), r) for p, r in zip(prompts, refs, strict=True) if r]
    scores = iter(score_continuations(model, tokenizer, pairs, batch_size=batch_size, desc="reference loss",
                                      max_batch_tokens=max_batch_tokens))
    out = []
    for r in refs:
        if r:
            s = next(scores)
            out.append((-s.logprob, s.tokens))
        else:
            out.append((0.0, 0))
    return out


def _aggregate(examples: list[dict[str, Any]], names: list[str], cfg: EvalConfig, seed: int) -> dict[str, MetricValue]:
    preds = [e["prediction"] for e in examples]
    refs = [e["reference"] for e in examples]
    out = {}
    for name in names:
        per = [e["scores"][name] for e in examples] if name in PER_EXAMPLE else None
        out[name] = metric_value(name, preds, refs, per, cfg.bootstrap_samples, cfg.confidence, seed)
    if examples and "ref_nll" in examples[0]:
        import math

        import numpy as np

        nll = np.array([e["ref_nll"] for e in examples])
        tok = np.array([e["ref_tokens"] for e in examples])
        # token-weighted mean loss: a ratio of sums, bootstrapped over examples
        loss = float(nll.sum() / max(tok.sum(), 1))
        lo = hi = None
        if cfg.bootstrap_samples > 0 and len(examples) > 1:
            rng = np.random.default_rng(seed)
            idx = rng.integers(0, len(examples), size=(cfg.bootstrap_samples, len(examples)))
            ratios = nll[idx].sum(1) / np.maximum(tok[idx].sum(1), 1)
            a = (1 - cfg.confidence) / 2
            lo, hi = float(np.quantile(ratios, a)), float(np.quantile(ratios, 1 - a))
        out["ref_loss"] = MetricValue(loss, lo, hi, len(examples))
        out["perplexity"] = MetricValue(
            math.exp(loss), math.exp(lo) if lo is not None else None, math.exp(hi) if hi is not None else None, len(examples)
        )
    return out


def evaluate_split(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    test_file: str | Path,
    *,
    system: str,
    train_file: str | Path | None = None,
    shots: int = 0,
    max_examples: int | None = None,
    cfg: EvalConfig,
    seed: int = 0,
) -> ResultRow:
    """Generate answers for the test split and score them; ``shots > 0`` needs ``train_file``."""
    examples = load_examples(test_file, max_examples or cfg.max_examples)
    if shots > 0 and train_file is None:
        raise UserError(f"a {shots}-shot baseline needs the train split (train_file) to draw examples from")
    train = load_examples(train_file) if shots > 0 and train_file else []
    seen = {json.dumps(e["messages"], sort_keys=True) for e in examples}
    train = [t for t in train if json.dumps(t["messages"], sort_keys=True) not in seen]  # never show a test example
    unknown = [m for m in (cfg.metrics or []) if m not in ALL_METRICS]
    if unknown:
        raise UserError(f"eval.metrics: unknown metric {unknown[0]!r}; choose from {', '.join(ALL_METRICS)}")

    prompts, refs = [], []
    shot_cache: dict[str, list[dict[str, Any]]] = {}
    for e in examples:
        prompt, ref = prompt_messages(e["messages"])
        task = str(e["meta"]["task"])
        if shots > 0:
            if task not in shot_cache:
                shot_cache[task] = pick_shots(train, shots, seed, task)
            prompt = with_shots(prompt, shot_cache[task])
        prompts.append(prompt)
        refs.append(ref)
    stop = list(cfg.stop) or None
    max_new = cfg.max_new_tokens
    if cfg.classification_max_new_tokens and all(e["meta"].get("label_set") for e in examples):
        max_new = min(max_new, cfg.classification_max_new_tokens)
    preds = generate_batch(
        model, tokenizer, prompts, max_new_tokens=max_new, batch_size=cfg.batch_size,
        temperature=cfg.temperature, seed=seed, stop=stop, max_batch_tokens=cfg.batch_tokens,
    )
    n_tokens = prompt_token_counts(tokenizer, prompts)
    losses = (reference_losses(model, tokenizer, prompts, refs, cfg.batch_size, cfg.batch_tokens)
              if cfg.reference_loss else None)

    per_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    records = []
    for i, e in enumerate(examples):
        meta = e["meta"]
        task = str(meta["task"])
        label_set = meta.get("label_set")
        names = cfg.metrics or default_metrics(task, bool(label_set))
        rec: dict[str, Any] = {
            "id": meta["id"], "task": task, "system": system, "prompt": prompts[i][-1]["content"],
            "reference": refs[i], "prediction": preds[i], "prompt_tokens": n_tokens[i],
            "scores": {n: score_example(n, preds[i], refs[i], label_set) for n in names if n in PER_EXAMPLE},
        }
        if label_set:
            from tuneforge.eval.metrics import extract_label

            rec["extracted_label"] = extract_label(preds[i], label_set)
        if losses is not None:
            rec["ref_nll"], rec["ref_tokens"] = losses[i]
        rec["_metrics"] = names
        per_task[task].append(rec)
        records.append(rec)

    breakdown = {}
    for task, recs in per_task.items():
        breakdown[task] = _aggregate(recs, recs[0]["_metrics"], cfg, seed)
    # overall: metrics every task shares (a mixed file pools its examples)
    shared = [n for n in records[0]["_metrics"] if all(n in r["_metrics"] for r in records)]
    overall = _aggregate(records, shared, cfg, seed)
    for r in records:
        del r["_metrics"]
    tasks = sorted(per_task)
    row = ResultRow(
        system=system,
        task=tasks[0] if len(tasks) == 1 else "all",
        metrics=overall,
        prompt_tokens_per_request=sum(n_tokens) / len(n_tokens),
        extra={
            "kind": "test",
            "shots": shots,
            "test_file": str(test_file),
            "examples": len(records),
            "per_task": {t: {k: vars(v) for k, v in m.items()} for t, m in breakdown.items()} if len(tasks) > 1 else {},
            "generation": {"max_new_tokens": max_new, "temperature": cfg.temperature, "seed": seed},
            "predictions": records,
        },
    )
    return row


def pop_predictions(row: ResultRow) -> list[dict[str, Any]]:
    """Take the per-example predictions out of a row (so results.json stays small)."""
    return row.extra.pop("predictions", [])


def write_predictions(path: str | Path, records: list[dict[str, Any]]) -> Path:
    return atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
