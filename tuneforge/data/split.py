"""Deterministic train/val/test splits by seeded content hash, optionally stratified by label.

Examples are grouped by what the model sees (``ChatExample.input_key``) and by near-duplicate links, and
each group goes to one split as a whole, so an exact duplicate (or a near-copy) can never be in train
and test at once. Groups are ordered by SHA-256 of ``seed:key``: the same data and seed always give the
same split, and a new example does not move the others.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from tuneforge.data.example import ChatExample

SPLITS = ("train", "val", "test")


def _order(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def group_keys(examples: list[ChatExample], near_pairs: list[tuple[int, int, float]]) -> list[str]:
    """A group key per example: its input hash, merged along near-duplicate pairs (union-find)."""
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, e in enumerate(examples):
        j = first.setdefault(e.input_key, i)
        if j != i:
            parent[find(i)] = find(j)
    for i, j, _ in near_pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [examples[find(i)].input_key for i in range(len(examples))]


def sample(examples: list[ChatExample], keys: list[str], n: int | None, seed: int) -> tuple[list[ChatExample], list[str]]:
    """At most ``n`` examples, whole groups at a time, in seeded hash order (a reproducible random sample)."""
    order = sorted(range(len(examples)), key=lambda i: (_order(seed, keys[i]), examples[i].id))
    if n is not None:
        order = order[:n]
    return [examples[i] for i in order], [keys[i] for i in order]


def assign(examples: list[ChatExample], keys: list[str], val_fraction: float, test_fraction: float, seed: int,
           stratify: bool = False) -> dict[str, list[ChatExample]]:
    """Split examples (already in seeded order) into train/val/test, whole groups at a time."""
    groups: dict[str, list[ChatExample]] = defaultdict(list)
    for e, k in zip(examples, keys, strict=True):
        groups[k].append(e)
    strata: dict[str, list[str]] = defaultdict(list)
    for k in sorted(groups, key=lambda k: _order(seed, k)):
        strata[str(groups[k][0].label) if stratify else ""].append(k)
    out: dict[str, list[ChatExample]] = {s: [] for s in SPLITS}
    for _, members in sorted(strata.items()):
        total = sum(len(groups[k]) for k in members)
        want = {"test": round(total * test_fraction), "val": round(total * val_fraction)}
        got = {"test": 0, "val": 0}
        for k in members:
            target = next((s for s in ("test", "val") if got[s] < want[s]), "train")
            if target != "train":
                got[target] += len(groups[k])
            out[target].extend(groups[k])
    # Interleave strata back into one seeded order per split.
    for s in SPLITS:
        out[s].sort(key=lambda e: (_order(seed, e.input_key), e.id))
    return out
