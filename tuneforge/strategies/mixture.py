"""Multi-task mixtures: how many examples of each task go into one shuffled training set.

Three ways to set each task's rate (share of the mixture):

- ``proportional``: rate ~ min(size, cap), the natural mix of the data;
- ``fixed``: rate ~ the task's weight, whatever its size;
- ``temperature``: rate ~ min(size, cap) ** (1/T). T=1 is proportional; larger T flattens the mix towards
  uniform, so a small task is not drowned by a large one (the T5 / mT5 recipe).

A rate times the mixture's total can exceed a task's size; the task is then repeated, at most
``max_repeats`` times, and what it cannot fill goes to the other tasks in proportion to their rates.
Every example keeps its task tag in ``meta.task`` so that the loop, the packer and the reports can
score each task separately.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneforge import atomic
from tuneforge.config.strategies import MixtureConfig
from tuneforge.errors import UserError


def task_rates(
    sizes: dict[str, int],
    strategy: str,
    *,
    weights: dict[str, float] | None = None,
    temperature: float = 2.0,
    cap: int | None = None,
) -> dict[str, float]:
    """Each task's share of the mixture (sums to 1)."""
    if not sizes:
        raise UserError("a mixture needs at least one task")
    empty = [t for t, n in sizes.items() if n <= 0]
    if empty:
        raise UserError(f"mixture: task(s) {', '.join(empty)} have no training examples")
    capped = {t: min(n, cap) if cap else n for t, n in sizes.items()}
    if strategy == "proportional":
        raw = {t: float(n) for t, n in capped.items()}
    elif strategy == "temperature":
        raw = {t: float(n) ** (1.0 / temperature) for t, n in capped.items()}
    elif strategy == "fixed":
        if not weights or any(t not in weights for t in sizes):
            raise UserError("mixture strategy fixed needs a weight for every task")
        raw = {t: float(weights[t]) for t in sizes}
    else:
        raise UserError(f"unknown mixture strategy {strategy!r}; use proportional, fixed or temperature")
    total = sum(raw.values())
    return {t: v / total for t, v in raw.items()}


def _round_to_total(shares: dict[str, float], total: int) -> dict[str, int]:
    """Integer counts summing to ``total`` (largest remainder), from non-negative real shares."""
    floors = {t: math.floor(v) for t, v in shares.items()}
    left = total - sum(floors.values())
    by_remainder = sorted(shares, key=lambda t: (shares[t] - floors[t], t), reverse=True)
    for t in by_remainder[: max(left, 0)]:
        floors[t] += 1
    return floors


def task_counts(
    sizes: dict[str, int], rates: dict[str, float], total: int, max_repeats: float = 4.0
) -> dict[str, int]:
    """Examples to draw from each task: ``total * rate``, each limited to ``size * max_repeats``.

    A limited task's surplus is handed to the unlimited ones in proportion to their rates; if every task
    hits its limit the mixture is simply smaller than ``total``.
    """
    limits = {t: math.floor(sizes[t] * max_repeats) for t in sizes}
    fixed: dict[str, float] = {}
    free = dict(rates)
    remaining = float(total)
    while free:
        mass = sum(free.values())
        wanted = {t: remaining * r / mass for t, r in free.items()}
        over = [t for t, w in wanted.items() if w > limits[t]]
        if not over:
            fixed.update(wanted)
            break
        for t in over:
            fixed[t] = float(limits[t])
            remaining -= limits[t]
            del free[t]
    target = min(total, sum(limits.values()))
    return _round_to_total(fixed, target)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    from tuneforge.data.io import iter_jsonl

    return [row for _, row in iter_jsonl(path)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with atomic.replace_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def tag(rows: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """Set ``meta.task`` on every example (copies; the originals are left alone)."""
    return [{**r, "meta": {**(r.get("meta") or {}), "task": task}} for r in rows]


def draw(rows: list[dict[str, Any]], count: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` examples: whole shuffled passes over ``rows``, then a shuffled partial pass."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        batch = rows[:]
        rng.shuffle(batch)
        out.extend(batch[: count - len(out)])
    return out


@dataclass
class TaskShare:
    """What one task contributed to a mixture (written to the run report)."""

    task: str
    available: int
    rate: float
    examples: int

    @property
    def repeats(self) -> float:
        return self.examples / self.available if self.available else 0.0


def mix_tasks(
    task_rows: dict[str, list[dict[str, Any]]], cfg: MixtureConfig, seed: int = 42
) -> tuple[list[dict[str, Any]], list[TaskShare]]:
    """One shuffled training set drawn from several tasks as ``cfg`` says, each example tagged."""
    sizes = {t: len(rows) for t, rows in task_rows.items()}
    weights = {t.name: t.weight for t in cfg.tasks if t.weight is not None}
    rates = task_rates(sizes, cfg.strategy, weights=weights, temperature=cfg.temperature, cap=cfg.cap)
    total = cfg.total or sum(min(n, cfg.cap) if cfg.cap else n for n in sizes.values())
    counts = task_counts(sizes, rates, total, cfg.max_repeats)
    rng = random.Random(seed)
    mixed: list[dict[str, Any]] = []
    shares = []
    for task in task_rows:  # recipe order, so the draw is reproducible for a seed
        mixed += tag(draw(task_rows[task], counts[task], rng), task)
        shares.append(TaskShare(task, sizes[task], rates[task], counts[task]))
    rng.shuffle(mixed)
    return mixed, shares


def mix_files(
    task_files: dict[str, Path], out: Path, cfg: MixtureConfig, seed: int = 42
) -> tuple[Path, list[TaskShare]]:
    """:func:`mix_tasks` over prepared JSONL files; writes the mixture to ``out``."""
    rows, shares = mix_tasks({t: read_jsonl(p) for t, p in task_files.items()}, cfg, seed)
    write_jsonl(out, rows)
    return out, shares


def concat_tagged(task_files: dict[str, Path], out: Path) -> Path:
    """Validation/test files of every task in one file, unweighted, each example tagged with its task."""
    rows: list[dict[str, Any]] = []
    for task, path in task_files.items():
        rows += tag(read_jsonl(path), task)
    return write_jsonl(out, rows)


def shares_table(shares: list[TaskShare]) -> list[dict[str, Any]]:
    return [{**asdict(s), "rate": round(s.rate, 4), "repeats": round(s.repeats, 3)} for s in shares]
