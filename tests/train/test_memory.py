"""The memory estimate moves the way the planner's choices assume."""

from __future__ import annotations

from tuneforge.config.train import TrainConfig
from tuneforge.train.memory import estimate_memory
from tuneforge.train.methods import apply_method


def test_lora_and_checkpointing_and_smaller_batches_need_less(tokenizer):
    from tuneforge.models.tiny import tiny_model

    full = apply_method(tiny_model(tokenizer), TrainConfig(method="full"))
    lora = apply_method(tiny_model(tokenizer), TrainConfig(method="lora"))
    big = estimate_memory(full, 8 * 512, gradient_checkpointing=False)
    assert estimate_memory(lora, 8 * 512, False).total < big.total
    assert estimate_memory(full, 8 * 512, True).activations < big.activations
    assert estimate_memory(full, 2 * 512, False).total < big.total
    assert estimate_memory(full, 8 * 512, False, logit_tokens=64).logits < big.logits
    # Attention masks grow with the row length at the same number of tokens (4 x 1024 vs 8 x 512).
    short = estimate_memory(full, 8 * 512, False, seq_len=512)
    assert estimate_memory(full, 4 * 1024, False, seq_len=1024).activations > short.activations > big.activations


def test_chunked_logits_hold_one_chunk_not_every_position(tokenizer):
    from tuneforge.models.tiny import tiny_model
    from tuneforge.train.chunked_loss import chunk_rows

    model = tiny_model(tokenizer)
    whole = estimate_memory(model, 8 * 512, False, logit_tokens=4096)
    chunked = estimate_memory(model, 8 * 512, False, logit_tokens=4096, chunked_logits=True)
    # One chunk's logits turned into their gradient in place (2 buffers), not logits, softmax and gradient
    # of every position (3).
    assert chunked.logits == whole.logits * chunk_rows(len(tokenizer)) / 4096 * 2 / 3
