"""Drift: KL of the tuned from the base next-token distributions on general text and chat."""

import copy
import importlib.util

import pytest
import torch

from tests.eval.conftest import record_logit_shapes
from tuneforge.config.eval import EvalConfig
from tuneforge.eval import drift
from tuneforge.eval.forgetting import ForgettingSuite, compare_forgetting
from tuneforge.eval.forgetting_reading import reading
from tuneforge.eval.general_data import GeneralInput

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("gensim", "chitchat_dataset", "evals")),
    reason="general probe data (gensim, chitchat-dataset, evals) not installed",
)

CFG = EvalConfig(forgetting_tasks=[], general_probes=["drift"], general_examples=8, drift_max_tokens=32,
                 bootstrap_samples=500)


def _perturbed(model, scale: float = 0.5):
    """The same model with noise added to its output head (tied to the embeddings in the tiny model)."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        head = other.get_output_embeddings().weight
        head.add_(scale * head.std() * torch.randn(head.shape, generator=gen))
    return other


def test_kl_of_a_model_with_itself_is_zero(tiny_model, tokenizer):
    suite = ForgettingSuite(tokenizer, CFG)
    assert suite.run(tiny_model, "base") == []  # the base only records the reference
    (row,) = suite.run(tiny_model, "tuned")
    assert row.task == "forgetting:drift" and row.metrics["kl"].n == 8
    assert row.extra["scores"] == [0.0] * 8
    (d,) = compare_forgetting([row], samples=200)
    assert d.delta == 0.0 and not d.flagged
    assert "no measurable drift" in reading(d)


def test_a_perturbed_head_drifts_with_an_interval_above_zero(tiny_model, tokenizer):
    suite = ForgettingSuite(tokenizer, CFG)
    suite.run(tiny_model, "base")
    (row,) = suite.run(_perturbed(tiny_model), "tuned")
    (d,) = compare_forgetting([row], samples=500, drift_threshold=0.0)
    assert d.delta > 0 and d.ci_low > 0
    assert d.flagged  # above a flag level of 0
    (unflagged,) = compare_forgetting([row], samples=500, drift_threshold=1e6)
    assert not unflagged.flagged and "below the flag level" in reading(unflagged)


def test_more_noise_drifts_further(tiny_model, tokenizer):
    suite = ForgettingSuite(tokenizer, CFG)
    suite.run(tiny_model, "base")
    small = suite.run(_perturbed(tiny_model, 0.1), "small")[0].metrics["kl"].value
    large = suite.run(_perturbed(tiny_model, 1.0), "large")[0].metrics["kl"].value
    assert 0 < small < large


def test_top_k_kl_is_a_lower_bound_and_exact_over_the_whole_vocabulary(tiny_model, tokenizer):
    texts = [GeneralInput(f"t{i}", "text", text=t) for i, t in enumerate(
        ["The cat sat on the mat and looked out of the window.", "Rivers flow to the sea, slowly and surely."])]
    other = _perturbed(tiny_model)
    vocab = tiny_model.config.vocab_size
    full = drift.kl_per_input(other, tokenizer, drift.reference(tiny_model, tokenizer, texts, 32, top_k=vocab))
    ids = drift.encode(tokenizer, texts, 32)
    for value, seq in zip(full, ids, strict=True):
        with torch.no_grad():
            lb = torch.log_softmax(tiny_model(torch.tensor([seq])).logits[0, :-1].double(), -1)
            lt = torch.log_softmax(other(torch.tensor([seq])).logits[0, :-1].double(), -1)
        exact = float((lb.exp() * (lb - lt)).sum(-1).mean())
        assert value == pytest.approx(exact, rel=1e-3)  # float32 logits in drift, float64 here
    few = drift.kl_per_input(other, tokenizer, drift.reference(tiny_model, tokenizer, texts, 32, top_k=5))
    assert all(0 <= f <= v + 1e-9 for f, v in zip(few, full, strict=True))


def test_drift_needs_the_base_first(tiny_model, tokenizer):
    suite = ForgettingSuite(tokenizer, CFG)
    with pytest.raises(RuntimeError, match="base model"):
        suite.run(tiny_model, "tuned", base=False)


def test_drift_logits_stay_within_the_byte_bound_with_the_same_kl(tiny_model, tokenizer, monkeypatch):
    """8 drift inputs of 128 tokens made [8 x 128 x vocabulary] fp32 logits (200 MB for SmolLM2) plus a
    log-softmax as large: batches are now cut so that their logits stay within LOGIT_BYTES."""
    from tuneforge.eval import batching
    from tuneforge.eval.general_data import drift_inputs

    inputs = drift_inputs(8, 0)
    other = _perturbed(tiny_model)
    ref = drift.reference(tiny_model, tokenizer, inputs, 64, top_k=20)
    free = drift.kl_per_input(other, tokenizer, ref)
    shapes = record_logit_shapes(other, monkeypatch)
    bound = 4 * tiny_model.config.vocab_size * 150  # 150 positions of fp32 logits: 2 rows of 64 tokens
    monkeypatch.setattr(batching, "LOGIT_BYTES", bound)
    capped = drift.kl_per_input(other, tokenizer, ref)
    assert capped == pytest.approx(free, rel=1e-4, abs=1e-6)
    assert len(shapes) >= 4 and all(rows == 1 or 4 * rows * width * v <= bound for rows, width, v in shapes)
