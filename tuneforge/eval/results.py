"""The shared results file every evaluating stage writes: ``<run>/eval/results.json``.

One row per system evaluated (``base zero-shot``, ``base 3-shot``, ``tuned``, ``base + RAG``,
``tuned + RAG``, ...). `tuneforge compare` and the HTML report read these files, so every stage (eval,
rag, train strategies) reports in the same shape::

    {"rows": [{"system": "tuned", "task": "sentiment",
               "metrics": {"accuracy": {"value": 0.81, "ci_low": 0.75, "ci_high": 0.86, "n": 200}},
               "prompt_tokens_per_request": 61.0,
               "extra": {}}]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge import atomic


@dataclass
class MetricValue:
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None


@dataclass
class ResultRow:
    system: str
    task: str
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    prompt_tokens_per_request: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


RESULTS_FILE = Path("eval") / "results.json"


def write_results(run_path: str | Path, rows: list[ResultRow], merge: bool = True) -> Path:
    """Write rows to ``<run>/eval/results.json``; with ``merge``, rows replace earlier ones of the same
    (system, task) and others are kept."""
    path = Path(run_path) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = read_results(path) if (merge and path.is_file()) else []
    keys = {(r.system, r.task) for r in rows}
    kept = [r for r in existing if (r.system, r.task) not in keys]
    payload = {"rows": [asdict(r) for r in kept + rows]}
    return atomic.write_text(path, json.dumps(payload, indent=2, sort_keys=False))


def read_results(path: str | Path) -> list[ResultRow]:
    """Rows from a results file, or from ``<run>/eval/results.json`` when given a run folder."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        return []
    rows = []
    for raw in json.loads(p.read_text()).get("rows", []):
        metrics = {k: MetricValue(**v) for k, v in raw.get("metrics", {}).items()}
        rows.append(
            ResultRow(
                system=raw["system"],
                task=raw["task"],
                metrics=metrics,
                prompt_tokens_per_request=raw.get("prompt_tokens_per_request"),
                extra=raw.get("extra", {}),
            )
        )
    return rows
