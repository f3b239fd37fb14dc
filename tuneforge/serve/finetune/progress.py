"""What a job's run folder says, turned into the API's words: metric events, checkpoints, the result CSV
and the evaluation's verdict. Read from the files ``tuneforge train`` writes (metrics.jsonl,
checkpoints/, train_result.json, eval/), so the server never needs the training process's memory."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.runs import CHECKPOINTS, METRICS

log = logging.getLogger(__name__)
CSV_COLUMNS = ("step", "train_loss", "valid_loss", "learning_rate", "tokens")


@dataclass
class Tail:
    """New metrics.jsonl rows since the last look. A resumed run rewrites the file without the rows after
    its checkpoint; those steps are reported again only past the last step already reported."""

    path: Path
    offset: int = 0
    reported: dict[str, int] = field(default_factory=dict)  # split -> last step reported
    checkpoints: set[str] = field(default_factory=set)

    def new_rows(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:
            self.offset = 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next look
        self.offset += end
        rows = []
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            split, step = row.get("split"), row.get("step")
            if split not in ("train", "val") or not isinstance(step, int) or row.get("task") is not None:
                continue
            if step <= self.reported.get(split, -1):
                continue
            self.reported[split] = step
            rows.append(row)
        return rows


def metric_event(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    step = row["step"]
    if row["split"] == "train":
        return (f"Step {step}: training loss={row['loss']:.4f}",
                {"step": step, "train_loss": row["loss"], "learning_rate": row.get("lr"), "tokens": row.get("tokens")})
    return f"Step {step}: validation loss={row['loss']:.4f}", {"step": step, "valid_loss": row["loss"]}


def checkpoints(run_path: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the run's complete checkpoints, oldest first."""
    from tuneforge.train.checkpoint import PREFIX, complete_checkpoints

    return [(int(p.name[len(PREFIX):]), p) for p in complete_checkpoints(run_path / CHECKPOINTS)]


def step_metrics(run_path: Path) -> dict[int, dict[str, Any]]:
    """step -> {train_loss, valid_loss, learning_rate, tokens} from metrics.jsonl."""
    out: dict[int, dict[str, Any]] = {}
    path = run_path / METRICS
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("task") is not None or not isinstance(row.get("step"), int):
            continue
        entry = out.setdefault(row["step"], {"step": row["step"]})
        if row.get("split") == "train":
            entry.update(train_loss=row.get("loss"), learning_rate=row.get("lr"), tokens=row.get("tokens"))
        elif row.get("split") == "val":
            entry["valid_loss"] = row.get("loss")
    return out


def result_csv(run_path: Path) -> bytes:
    """The step metrics as a CSV (one row per step, as OpenAI's result file has)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for step, row in sorted(step_metrics(run_path).items()):
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_COLUMNS} | {"step": step})
    return buf.getvalue().encode("utf-8")


def verdict(run_path: Path) -> tuple[str, dict[str, Any]] | None:
    """The evaluation's verdict after training (None when the job was not evaluated)."""
    if not (run_path / "eval" / "results.json").is_file():
        return None
    try:
        from tuneforge.eval.results import read_results
        from tuneforge.eval.verdict import decide

        v = decide(run_path, read_results(run_path))
    except Exception:  # the job's weights are fine even if its report cannot be read
        log.exception("%s: reading the evaluation failed", run_path)
        return None
    return f"Evaluation verdict: {v.headline}", {"answer": v.answer, "lines": v.lines}
