"""The memory estimate moves the way the advice says it will."""

from __future__ import annotations

import pytest

from tuneforge.config.train import TrainConfig
from tuneforge.errors import UserError
from tuneforge.train.memory import check_fits, estimate_memory
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
    # Attention matrices grow with the row length at the same number of tokens (4 x 1024 vs 8 x 512).
    short = estimate_memory(full, 8 * 512, False, seq_len=512)
    assert estimate_memory(full, 4 * 1024, False, seq_len=1024).activations > short.activations > big.activations
    with pytest.raises(UserError, match="train.method: lora"):
        check_fits(big, big.total / 2, "full", 8, False, "cpu")
    check_fits(big, big.total * 2, "full", 8, False, "cpu")  # fits: no error
