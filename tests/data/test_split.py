"""Splits are deterministic, keep duplicates together, honour fractions and stratify by label."""

from __future__ import annotations

from collections import Counter

from tuneforge.data.example import ChatExample
from tuneforge.data.split import assign, group_keys, sample


def _ex(i, label="a", text=None):
    text = text or f"question number {i}"
    return ChatExample([{"role": "user", "content": text}, {"role": "assistant", "content": label}], "t", label, ["a", "b"])


def _split(examples, seed=1, stratify=False, pairs=()):
    keys = group_keys(examples, list(pairs))
    ordered, okeys = sample(examples, keys, None, seed)
    return assign(ordered, okeys, 0.2, 0.2, seed, stratify)


def _ids(splits):
    return {s: [e.id for e in v] for s, v in splits.items()}


def test_same_seed_same_split_and_new_seed_different():
    exs = [_ex(i) for i in range(200)]
    assert _ids(_split(exs)) == _ids(_split(list(reversed(exs))))  # input order does not matter
    assert _ids(_split(exs, seed=2)) != _ids(_split(exs))
    counts = {s: len(v) for s, v in _split(exs).items()}
    assert counts == {"train": 120, "val": 40, "test": 40}


def test_equal_inputs_and_near_duplicates_share_a_split():
    exs = [_ex(i) for i in range(100)]
    exs += [_ex(i, label="b") for i in range(0, 100, 10)]  # same input, conflicting answer
    exs.append(_ex(0, text="question number 5 !"))
    near = [(5, len(exs) - 1, 0.9)]
    splits = _split(exs, pairs=near)
    where = {}
    for s, v in splits.items():
        for e in v:
            where.setdefault(e.messages[0]["content"], set()).add(s)
    assert all(len(s) == 1 for s in where.values())
    assert where["question number 5"] == where["question number 5 !"]


def test_stratified_split_keeps_label_shares():
    exs = [_ex(i, label="a") for i in range(90)] + [_ex(i + 1000, label="b") for i in range(10)]
    splits = _split(exs, stratify=True)
    for s in ("val", "test"):
        assert Counter(e.label for e in splits[s]) == {"a": 18, "b": 2}


def test_sample_is_a_seeded_subset():
    exs = [_ex(i) for i in range(50)]
    keys = group_keys(exs, [])
    first, _ = sample(exs, keys, 10, 3)
    again, _ = sample(list(reversed(exs)), list(reversed(keys)), 10, 3)
    assert [e.id for e in first] == [e.id for e in again] and len(first) == 10
