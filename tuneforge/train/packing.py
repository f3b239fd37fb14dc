"""Packing examples into sequences and planning batches.

A packed row holds several examples back to back. Position ids restart at 0 for every example, and no
2D attention mask is passed, so transformers builds a block-diagonal causal mask from the position ids
(``masking_utils.find_packed_sequence_indices``): no example attends to another, and each example's
loss is the one it would have alone. Padding at the end of a row is its own block with target -100.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tuneforge.data.chat import IGNORE_INDEX
from tuneforge.train.data import TokenizedExample

# A micro-batch is padded to a width that is a multiple of this. Packed rows end at a different length every
# step, and glibc's heap cannot reuse a freed activation for a slightly wider one: without rounding, a bf16
# SmolLM2 LoRA run's RSS crept from 710 to ~1,310 MB over 24 steps of <= 192-token rows; rounded to 8, to
# ~1,150 (to 32: ~1,070, at 1.5% of tokens/s). Steps alternated in one process: 8 costs no measurable
# speed (245.6 vs 244.1 tokens/s; up to 7 padded positions per row, attended by nobody, with no target).
WIDTH_MULTIPLE = 8


def padded_width(longest: int) -> int:
    """The width of a micro-batch whose longest row has ``longest`` tokens."""
    return -(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE


def pack_examples(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: group example indices into bins of at most ``capacity`` tokens.

    Deterministic for given lengths; bins end up nearly full, so little compute goes to padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(capacity - n)
    return bins


def make_rows(examples: list[TokenizedExample], capacity: int, packing: bool) -> list[list[int]]:
    """Rows of example indices: packed bins, or one example per row."""
    if packing:
        return pack_examples([len(e) for e in examples], capacity)
    return [[i] for i in range(len(examples))]


def plan_epoch(row_lengths: list[int], global_batch: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """Micro-batches (lists of row indices, ``global_batch`` rows each, across all processes) for one epoch.

    A function of (seed, epoch) only, so a resumed run sees exactly the batches it would have seen.
    With ``group_by_length`` rows are sorted by length inside windows of 50 batches, then the batches
    are shuffled: similar lengths share a batch (little padding) while the order stays random.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(row_lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = global_batch * 50
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lambda i: -row_lengths[i])
        ]
    batches = [order[s : s + global_batch] for s in range(0, len(order), global_batch)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L], restarting at 0 for every example
    target: torch.Tensor  # [B, L], -100 where there is no loss
    attention_mask: torch.Tensor  # [B, L], 1 on real tokens (used only where packing is off)
    n_tokens: int  # real (non-padding) tokens
    n_target: int  # tokens that carry loss
    task_ids: torch.Tensor | None = None  # [B, L], index into ``tasks`` of each token's example, -1 if untagged


def task_names(examples: list[TokenizedExample]) -> list[str]:
    """The sorted task tags of a split (empty when no example is tagged): the index ``task_ids`` use."""
    return sorted({e.task for e in examples if e.task is not None})


def collate(examples: list[TokenizedExample], rows: list[list[int]], pad_id: int, tasks: list[str] | None = None) -> Batch:
    """Tensors for a micro-batch of rows (each row a list of example indices), right-padded to
    ``padded_width`` of the longest.

    With ``tasks`` (see ``task_names``) every token also carries its example's task index, so a packed
    row of several tasks' examples can still be scored task by task.
    """
    index = {t: k for k, t in enumerate(tasks or [])}
    seqs: list[tuple[list[int], list[int], list[int]]] = []
    tags: list[list[int]] = []
    for row in rows:
        ids: list[int] = []
        pos: list[int] = []
        tgt: list[int] = []
        tag: list[int] = []
        for i in row:
            ex = examples[i]
            ids += ex.input_ids
            pos += range(len(ex))
            tgt += ex.target
            tag += [index.get(ex.task, -1) if ex.task is not None else -1] * len(ex)
        seqs.append((ids, pos, tgt))
        tags.append(tag)
    width = padded_width(max(len(s[0]) for s in seqs))
    n_real = sum(len(s[0]) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(seqs), width), dtype=torch.long)
    target = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (ids, pos, tgt) in enumerate(seqs):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids)
        position_ids[r, :n] = torch.tensor(pos)
        target[r, :n] = torch.tensor(tgt)
        attention_mask[r, :n] = 1
        position_ids[r, n:] = torch.arange(width - n)  # padding: a separate block nobody attends to
    n_target = int((target != IGNORE_INDEX).sum())
    task_ids = None
    if index:
        task_ids = torch.full((len(seqs), width), -1, dtype=torch.long)
        for r, tag in enumerate(tags):
            task_ids[r, : len(tag)] = torch.tensor(tag, dtype=torch.long)
    return Batch(input_ids, position_ids, target, attention_mask, n_real, n_target, task_ids)
