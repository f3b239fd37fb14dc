"""Packing: examples share a row but not attention; batches are planned deterministically."""

from __future__ import annotations

import torch

from tuneforge.data.chat import IGNORE_INDEX
from tuneforge.train.data import tokenize_file
from tuneforge.train.packing import WIDTH_MULTIPLE, collate, pack_examples, plan_epoch


def _per_example_losses(model, batch, spans):
    """Mean token loss of each example, read from one forward pass over the (packed) batch."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    out = []
    for row, start, end in spans:
        tgt = batch.target[row, start:end]
        lg = logits[row, start:end]
        out.append(torch.nn.functional.cross_entropy(lg, tgt, ignore_index=IGNORE_INDEX).item())
    return out


def test_packed_batch_gives_each_example_its_unpacked_loss(tiny_model, tokenizer, prepared_dir):
    examples = tokenize_file(tokenizer, prepared_dir / "train.jsonl", max_length=256)[:6]
    # Unpacked: one example per row, right-padded.
    alone = collate(examples, [[i] for i in range(6)], tokenizer.pad_token_id)
    expected = _per_example_losses(tiny_model, alone, [(i, 0, len(examples[i])) for i in range(6)])
    # Packed: three examples per row, padding at the end of the shorter row.
    rows = [[0, 1, 2], [3, 4, 5]]
    packed = collate(examples, rows, tokenizer.pad_token_id)
    spans = []
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            spans.append((r, start, start + len(examples[i])))
            start += len(examples[i])
    got = _per_example_losses(tiny_model, packed, spans)
    assert packed.input_ids.shape[0] == 2 and packed.n_tokens == sum(len(e) for e in examples)
    assert torch.allclose(torch.tensor(got), torch.tensor(expected), atol=1e-4, rtol=1e-5)
    # Position ids restart for each example (0 at the start of the second one).
    assert packed.position_ids[0, len(examples[0])] == 0


def test_a_row_is_padded_to_a_multiple_of_the_width_and_keeps_its_loss(tiny_model, tokenizer, prepared_dir):
    # Widths rounded up so the allocator can reuse a step's activations for the next (see WIDTH_MULTIPLE).
    examples = tokenize_file(tokenizer, prepared_dir / "train.jsonl", max_length=256)
    n = len(examples[0]) + len(examples[1])
    if n % WIDTH_MULTIPLE == 0:
        examples = examples[1:]
        n = len(examples[0]) + len(examples[1])
    assert n % WIDTH_MULTIPLE  # the row really needs padding
    padded = collate(examples, [[0, 1]], tokenizer.pad_token_id)
    assert padded.input_ids.shape[1] == -(-n // WIDTH_MULTIPLE) * WIDTH_MULTIPLE and padded.n_tokens == n
    assert (padded.target[0, n:] == IGNORE_INDEX).all()
    exact = collate(examples, [[0, 1]], tokenizer.pad_token_id)
    for name in ("input_ids", "position_ids", "target"):
        setattr(exact, name, getattr(exact, name)[:, :n])
    spans = [(0, 0, len(examples[0])), (0, len(examples[0]), n)]
    got = _per_example_losses(tiny_model, padded, spans)
    want = _per_example_losses(tiny_model, exact, spans)
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-5, rtol=1e-5)


def test_without_restarting_positions_examples_would_interfere(tiny_model, tokenizer, prepared_dir):
    """The check above can fail: with plain 0..L positions the second example sees the first."""
    examples = tokenize_file(tokenizer, prepared_dir / "train.jsonl", max_length=256)[:2]
    packed = collate(examples, [[0, 1]], tokenizer.pad_token_id)
    alone = collate(examples, [[1]], tokenizer.pad_token_id)
    n0, n1 = len(examples[0]), len(examples[1])
    packed.position_ids = torch.arange(packed.input_ids.shape[1]).unsqueeze(0)
    leaked = _per_example_losses(tiny_model, packed, [(0, n0, n0 + n1)])[0]
    clean = _per_example_losses(tiny_model, alone, [(0, 0, n1)])[0]
    assert abs(leaked - clean) > 1e-3


def test_targets_never_cross_example_boundaries(tokenizer, prepared_dir):
    examples = tokenize_file(tokenizer, prepared_dir / "train.jsonl", max_length=256)[:2]
    packed = collate(examples, [[0, 1]], tokenizer.pad_token_id)
    n0 = len(examples[0])
    # The last token of example 0 predicts nothing (not the first token of example 1).
    assert packed.target[0, n0 - 1] == IGNORE_INDEX
    # Targets are the next token where the label is set.
    t = packed.target[0, :n0]
    ids = packed.input_ids[0, :n0]
    pos = (t != IGNORE_INDEX).nonzero().squeeze(1)
    assert torch.equal(t[pos], ids[pos + 1])


def test_first_fit_decreasing_fills_rows_without_overflow():
    lengths = [120, 90, 60, 200, 30, 30, 250, 10, 5, 180]
    bins = pack_examples(lengths, capacity=256)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 256 for b in bins)
    assert len(bins) == 4  # 975 tokens need at least 4 rows of 256


def test_epoch_plan_is_reproducible_and_reshuffled_per_epoch():
    lengths = list(range(10, 110))
    a = plan_epoch(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert a == plan_epoch(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert a != plan_epoch(lengths, 4, seed=1, epoch=1, group_by_length=True)
    assert sorted(i for b in a for i in b) == list(range(100))
    # Length grouping: rows in a batch have similar lengths.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    assert spread < 10


def test_task_tags_survive_packing_and_split_the_loss_by_task(tiny_model, tokenizer, prepared_dir):
    """Two tasks' examples packed into one row: each task's loss is what its examples score alone."""
    from dataclasses import replace

    from tuneforge.train.packing import task_names
    from tuneforge.train.steps import loss_sum, loss_sum_by_task

    base = tokenize_file(tokenizer, prepared_dir / "train.jsonl", max_length=256)[:3]
    examples = [replace(base[0], task="b"), replace(base[1], task="a"), replace(base[2], task="b")]
    tasks = task_names(examples)
    assert tasks == ["a", "b"]
    packed = collate(examples, [[0, 1, 2]], tokenizer.pad_token_id, tasks)
    assert packed.task_ids.shape == packed.input_ids.shape
    assert packed.task_ids[0, len(examples[0])] == 0 and packed.task_ids[0, 0] == 1
    with torch.no_grad():
        total, parts = loss_sum_by_task(tiny_model, packed, len(tasks))
        assert torch.allclose(total, loss_sum(tiny_model, packed), rtol=1e-5)
        for k, members in enumerate(([1], [0, 2])):
            alone = collate(examples, [[i] for i in members], tokenizer.pad_token_id)
            expected = loss_sum(tiny_model, alone)
            assert torch.allclose(parts[k, 0].float(), expected, rtol=1e-4)
            assert parts[k, 1] == sum(examples[i].n_target for i in members)
    # Untagged data keeps the plain path: no task ids at all.
    assert collate(base, [[0, 1]], tokenizer.pad_token_id).task_ids is None
