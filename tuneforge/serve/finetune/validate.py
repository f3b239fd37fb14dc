"""The job's uploaded chat JSONL through tuneforge's own data preparation, into a prepared folder.

Preparing *is* the validation: the same reader, format checks and quality checks as ``tuneforge data
prepare``. Rows a user must fix (not JSON, not chat messages, an empty prompt or answer) fail the job
with the first problems as ``file:line: field: what is wrong``, naming the file by the name it was
uploaded under; quality findings tuneforge handles itself (duplicates, overlong rows) become events.

Without a validation file the training file is split as ``tuneforge train`` splits it (10% validation,
10% test); with one, the training file is all training data and the validation file is both the
validation split and the evaluation's test split.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.data import DataConfig
from tuneforge.data.formats import to_messages
from tuneforge.data.io import MANIFEST
from tuneforge.data.prepare import prepare_data
from tuneforge.data.problems import Problem, RowError
from tuneforge.data.readers import read_rows
from tuneforge.errors import UserError

SHOWN = 5


class BadFile(Exception):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class Prepared:
    folder: Path
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)  # quality findings worth an event


def fatal_problems(path: Path, label: str) -> list[str]:
    """Rows the user must fix: unreadable lines and records that are not chat conversations."""
    found: list[Problem] = []
    for row in read_rows(path, DataConfig(path=str(path)).max_line_bytes):
        if row.problem is not None:
            found.append(row.problem)
            continue
        try:
            to_messages(row.record or {}, "chat")
        except RowError as err:
            found.append(Problem(err.kind, row.file, row.line, err.field, err.message))
    return [p.render().replace(str(path), label) for p in found]


def _prepare(path: Path, label: str, param: str, out: Path, tokenizer: Any, max_length: int, seed: int,
             split: bool) -> tuple[dict[str, Any], list[str]]:
    try:
        fatal = fatal_problems(path, label)
        if fatal:
            more = f" (and {len(fatal) - SHOWN} more)" if len(fatal) > SHOWN else ""
            raise BadFile(f"{param}: {len(fatal)} invalid row(s){more}: " + "; ".join(fatal[:SHOWN]), param)
        fractions = {} if split else {"val_fraction": 0.0, "test_fraction": 0.0}
        cfg = DataConfig(path=str(path), format="chat", max_length=max_length, **fractions)
        prepared = prepare_data(cfg, out, tokenizer=tokenizer, seed=seed)
    except UserError as err:
        text = "; ".join([str(err.args[0]), *err.problems])
        raise BadFile(f"{param}: " + text.replace(str(path), label), param) from None
    notes = [f"{label}: {n} {reason}" for reason, n in prepared.report["dropped"].items()]
    return prepared.manifest, notes


def _copy(source: Path, target: Path) -> Path:
    if not target.is_file():
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    return target


def prepare_job_data(out: Path, tokenizer: Any, max_length: int, seed: int, train: tuple[Path, str],
                     val: tuple[Path, str] | None) -> Prepared:
    """Prepared splits in ``out/data`` (BadFile when a file must be fixed). The uploads are copied into
    ``out`` first, as .jsonl (the readers go by extension), so the job keeps its input if a file is deleted."""
    data = out / "data"
    out.mkdir(parents=True, exist_ok=True)
    train = (_copy(train[0], out / "training_file.jsonl"), train[1])
    val = (_copy(val[0], out / "validation_file.jsonl"), val[1]) if val is not None else None
    if val is None:
        manifest, notes = _prepare(*train, "training_file", data, tokenizer, max_length, seed, split=True)
        return Prepared(data, manifest["counts"], notes)
    train_manifest, notes = _prepare(*train, "training_file", out / "prep-train", tokenizer, max_length, seed, False)
    val_manifest, val_notes = _prepare(*val, "validation_file", out / "prep-val", tokenizer, max_length, seed, False)
    tmp = out / "data.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(out / "prep-train" / "train.jsonl", tmp / "train.jsonl")
    shutil.copyfile(out / "prep-val" / "train.jsonl", tmp / "val.jsonl")
    shutil.copyfile(out / "prep-val" / "train.jsonl", tmp / "test.jsonl")
    counts = {"train": train_manifest["counts"]["train"], "val": val_manifest["counts"]["train"],
              "test": val_manifest["counts"]["train"]}
    (tmp / MANIFEST).write_text(json.dumps({"seed": seed, "counts": counts, "redact_pii": False,
                                            "input": "training_file + validation_file"}), encoding="utf-8")
    shutil.rmtree(data, ignore_errors=True)
    tmp.rename(data)
    return Prepared(data, counts, notes + val_notes)
