"""Generation and log-likelihood batches bounded by tokens (rows x padded length) and scoring batches by
their logits' bytes, with unchanged results."""

from __future__ import annotations

import pytest

from tests.eval.conftest import record_logit_shapes
from tuneforge.eval import batching
from tuneforge.eval.batching import logit_positions, split_by_positions, token_batches
from tuneforge.eval.generation import generate_batch
from tuneforge.eval.loglik import score_continuations

LONG = "This review goes on and on about the acting, the score, the pacing and the ending. " * 6
CONVERSATIONS = [[{"role": "user", "content": text}] for text in
                 ("Say hi", LONG, "Third one", "A medium prompt about a film that was fine", "Bye", "Why?")]


def test_a_batch_closes_at_the_token_cap_and_a_long_row_goes_alone():
    lengths = [5, 100, 6, 30, 4, 5]
    batches = token_batches(lengths, max_rows=4, max_tokens=64)
    assert batches == [[1], [3, 2], [0, 5, 4]]  # longest first: 100 alone, then 2 x 30, then 3 x 5
    assert all(len(b) * lengths[b[0]] <= 64 or len(b) == 1 for b in batches)
    # Without a cap (or a cap that does not bind) the batches are the plain fixed-size ones.
    assert token_batches(lengths, max_rows=4) == token_batches(lengths, 4, 10_000) == [[1, 3, 2, 0], [5, 4]]


def _forward_sizes(model, monkeypatch) -> list[tuple[int, int]]:
    """(rows, length) of every forward pass the model runs."""
    sizes: list[tuple[int, int]] = []
    forward = model.forward

    def recording(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        sizes.append(tuple(ids.shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", recording)
    return sizes


def test_generation_with_a_small_token_cap_gives_the_same_answers_in_smaller_batches(tiny_model, tokenizer,
                                                                                     monkeypatch):
    free = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=5, batch_size=6)
    sizes = _forward_sizes(tiny_model, monkeypatch)
    capped = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=5, batch_size=6,
                            max_batch_tokens=80)
    assert capped == free
    prefill = [s for s in sizes if s[1] > 1]  # the prompt passes (each generated token is a 1-wide pass)
    assert len(prefill) > 1  # the long prompt no longer shares a batch with the five short ones
    assert all(rows == 1 or rows * (width + 5) <= 80 for rows, width in prefill)


def test_loglik_with_a_small_token_cap_gives_the_same_scores(tiny_model, tokenizer, monkeypatch):
    pairs = [(LONG, " fresh"), ("Short.", " rotten"), ("Also short, a bit longer.", " fresh"), ("Hm.", " no")]
    free = score_continuations(tiny_model, tokenizer, pairs, batch_size=4)
    sizes = _forward_sizes(tiny_model, monkeypatch)
    capped = score_continuations(tiny_model, tokenizer, pairs, batch_size=4, max_batch_tokens=32)
    assert [s.tokens for s in capped] == [s.tokens for s in free]
    assert [s.greedy for s in capped] == [s.greedy for s in free]
    assert [s.logprob for s in capped] == pytest.approx([s.logprob for s in free], abs=1e-4)
    assert len(sizes) >= 2 and all(rows == 1 or rows * width <= 32 for rows, width in sizes)


def test_drift_with_a_small_token_cap_gives_the_same_kl(tiny_model, tokenizer):
    from tuneforge.eval import drift
    from tuneforge.eval.general_data import GeneralInput
    from tuneforge.models.tiny import tiny_model as make_tiny

    inputs = [GeneralInput(id=str(i), kind="text", text=t) for i, t in enumerate((LONG, "A short text.", "Another short one here."))]
    other = make_tiny(tokenizer, seed=1)
    free = drift.kl_per_input(other, tokenizer, drift.reference(tiny_model, tokenizer, inputs, top_k=16))
    ref = drift.reference(tiny_model, tokenizer, inputs, top_k=16, max_batch_tokens=24)
    capped = drift.kl_per_input(other, tokenizer, ref, max_batch_tokens=24)
    assert capped == pytest.approx(free, abs=1e-5)
    assert all(k > 0 for k in capped)


def test_the_eval_config_caps_batches_by_tokens_by_default():
    from tuneforge.config.eval import EvalConfig

    assert EvalConfig().batch_tokens == 4096 and EvalConfig(batch_tokens=None).batch_tokens is None


def test_a_batch_is_cut_where_its_widest_row_times_rows_passes_the_position_cap():
    positions = [3, 10, 2, 2, 9, 1]
    assert split_by_positions([0, 1, 2, 3, 4, 5], positions, 20) == [[0, 1], [2, 3], [4, 5]]  # 2 x 10, 2 x 2, 2 x 9
    assert split_by_positions([0, 1, 2, 3, 4, 5], positions, 19) == [[0], [1], [2, 3], [4, 5]]
    assert split_by_positions([0, 2, 3, 5], positions, 100) == [[0, 2, 3, 5]]  # the cap does not bind
    assert split_by_positions([1], positions, 4) == [[1]]  # a row over the cap goes alone
    assert logit_positions(vocab=49_152, max_bytes=64 * 2**20) == 341


def test_loglik_logits_stay_within_the_byte_bound_with_the_same_scores(tiny_model, tokenizer, monkeypatch):
    """Long continuations (general-loss reference answers) made [16 x tail x vocabulary] fp32 logits of
    hundreds of MB: the batch is now cut so that its logits stay within LOGIT_BYTES."""
    answers = [" " + LONG[: 40 * (k + 1)] for k in range(6)]
    pairs = [(f"Question {k}: what did the review say?", a) for k, a in enumerate(answers)]
    free = score_continuations(tiny_model, tokenizer, pairs, batch_size=16)  # 64 MiB: one batch here
    shapes = record_logit_shapes(tiny_model, monkeypatch)
    vocab = tiny_model.config.vocab_size
    bound = 4 * vocab * 120  # 120 scored positions of fp32 logits
    monkeypatch.setattr(batching, "LOGIT_BYTES", bound)
    capped = score_continuations(tiny_model, tokenizer, pairs, batch_size=16)  # the default bound
    assert [s.logprob for s in capped] == pytest.approx([s.logprob for s in free], abs=1e-4)
    assert [s.greedy for s in capped] == [s.greedy for s in free]
    assert len(shapes) > 1
    assert all(rows == 1 or 4 * rows * kept * v <= bound for rows, kept, v in shapes)
