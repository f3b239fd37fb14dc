"""Batched generation and log-likelihood scoring on the tiny random model (fast)."""

import pytest
import torch

from tuneforge.eval.generation import cut_at_stop, generate_batch, prompt_token_counts
from tuneforge.eval.loglik import score_continuations

CONVERSATIONS = [
    [{"role": "user", "content": "Say hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer prompt, so that rows need padding"}],
    [{"role": "user", "content": "Third"}],
]


def test_batched_greedy_equals_one_at_a_time_in_order(tiny_model, tokenizer):
    batched = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=6, batch_size=3, temperature=1.0, seed=0)
    # sampled text differs per batch composition; greedy must not
    greedy = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=6, batch_size=3)
    single = [generate_batch(tiny_model, tokenizer, [c], max_new_tokens=6)[0] for c in CONVERSATIONS]
    assert greedy == single
    assert len(batched) == 3


def test_sampling_is_reproducible_with_a_seed(tiny_model, tokenizer):
    a = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=8, temperature=1.0, seed=7)
    b = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=8, temperature=1.0, seed=7)
    c = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=8, temperature=1.0, seed=8)
    assert a == b
    assert a != c


def test_stop_strings_cut_the_answer(tiny_model, tokenizer):
    free = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=12, temperature=1.5, seed=1)
    stop = next(ch for ch in "eaotinsr" if any(ch in t for t in free))  # a letter the free answers contain
    cut = generate_batch(tiny_model, tokenizer, CONVERSATIONS, max_new_tokens=12, temperature=1.5, seed=1, stop=[stop])
    assert all(stop not in t for t in cut)
    for f, c in zip(free, cut, strict=True):
        assert f.startswith(c)


def test_cut_at_stop_uses_earliest_stop():
    assert cut_at_stop("fresh\n\nrotten. More", ["\n\n", "."]) == "fresh"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"
    assert cut_at_stop("abc", None) == "abc"


def test_padding_side_is_restored(tiny_model, tokenizer):
    tokenizer.padding_side = "right"
    generate_batch(tiny_model, tokenizer, CONVERSATIONS[:2], max_new_tokens=2)
    assert tokenizer.padding_side == "right"


def test_prompt_token_counts_grow_with_prompt(tokenizer):
    system = {"role": "system", "content": "Be brief."}
    short, long = prompt_token_counts(
        tokenizer, [[system, {"role": "user", "content": "Hi"}], [system, {"role": "user", "content": "Hi " * 20}]]
    )
    assert long > short > 0


def _manual_logprob(model, tokenizer, context: str, continuation: str) -> float:
    c = tokenizer(context, add_special_tokens=False)["input_ids"]
    t = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        lp = torch.log_softmax(model(torch.tensor([c + t])).logits[0].float(), -1)
    return sum(lp[len(c) - 1 + j, t[j]].item() for j in range(len(t)))


def test_loglik_batched_matches_unbatched_full_forward(tiny_model, tokenizer):
    pairs = [
        ("Question: what is two plus two?\nAnswer:", " four"),
        ("Hi", ", how are you doing today my friend"),
        ("A much longer context with many more words in it so that padding matters a lot", " yes"),
    ]
    scores = score_continuations(tiny_model, tokenizer, pairs, batch_size=3)
    for (ctx, cont), s in zip(pairs, scores, strict=True):
        assert s.logprob == pytest.approx(_manual_logprob(tiny_model, tokenizer, ctx, cont), abs=1e-3)
        assert s.tokens == len(tokenizer(cont, add_special_tokens=False)["input_ids"])
