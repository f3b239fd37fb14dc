"""The training benchmark's shared evaluator: what counts as loss, and that it is a real loss."""

from __future__ import annotations

import json
import math

from bench.train import flops_per_token
from bench.train_workers import encode_pair, validation_loss


def test_encode_pair_masks_the_prompt_and_keeps_the_answer(tokenizer):
    messages = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hello there, friend."}]
    ids, labels = encode_pair(tokenizer, messages, max_length=512)
    assert len(ids) == len(labels)
    kept = [t for t in labels if t != -100]
    assert kept and labels[0] == -100
    assert "Hello there, friend." in tokenizer.decode(kept)
    assert "Say hi." not in tokenizer.decode(kept)


def test_validation_loss_is_a_token_mean_near_log_vocab_for_a_random_model(tokenizer, tiny_model, tmp_path):
    val = tmp_path / "val.jsonl"
    row = {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}
    val.write_text(json.dumps(row) + "\n")
    loss = validation_loss(tiny_model, tokenizer, val, max_length=128)
    # an untrained model is close to uniform over the vocabulary
    assert abs(loss - math.log(len(tokenizer))) < 2.0


def test_flops_formula_says_4n_for_lora_and_6n_for_full():
    assert flops_per_token("lora", 10) == 40
    assert flops_per_token("full", 10) == 60
