"""The bf16 path's choices (GPUs, and CPUs that multiply bf16 natively), checked on the CPU: under autocast the
chunked head computes in the autocast dtype (as ``nn.Linear`` would) and the fused LoRA layer hands over to
PEFT's forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneforge.train.chunked_loss import linear_cross_entropy


def test_chunked_head_runs_in_the_autocast_dtype_and_the_loss_in_fp32():
    torch.manual_seed(0)
    hidden, weight = torch.randn(10, 16), torch.randn(50, 16)
    target = torch.randint(0, 50, (10,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, losses = linear_cross_entropy(hidden, weight, target, chunk=4)
    assert losses.dtype == torch.float32
    bf16_ref = F.cross_entropy((hidden.bfloat16() @ weight.bfloat16().t()).float(), target, reduction="sum")
    fp32_ref = F.cross_entropy(hidden @ weight.t(), target, reduction="sum")
    torch.testing.assert_close(total, bf16_ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(total, fp32_ref, rtol=1e-6, atol=1e-6)


def test_bf16_autocast_on_a_cpu_is_taken_where_it_multiplies_bf16_natively_and_refused_elsewhere(monkeypatch):
    import pytest
    from accelerate.state import AcceleratorState

    from tuneforge import models
    from tuneforge.config import load_recipe
    from tuneforge.errors import UserError
    from tuneforge.train.api import make_accelerator

    recipe = load_recipe(None, {"model.device": "cpu", "train.mixed_precision": "bf16"})
    monkeypatch.setattr(models, "native_bf16", lambda: True)
    # accelerate keeps one process-wide state, set by the first Accelerator of the process: start afresh, and
    # leave it fresh for the other tests' (float32) accelerators
    AcceleratorState._reset_state(True)
    try:
        assert make_accelerator(recipe).mixed_precision == "bf16"
    finally:
        AcceleratorState._reset_state(True)
    monkeypatch.setattr(models, "native_bf16", lambda: False)
    with pytest.raises(UserError, match="bf16 needs a GPU or a CPU with AVX512-BF16 or AMX"):
        make_accelerator(recipe)
    with pytest.raises(UserError, match="mixed_precision=fp16 needs a GPU;"):
        make_accelerator(load_recipe(None, {"model.device": "cpu", "train.mixed_precision": "fp16"}))
    # auto stays float32 on a CPU, native bf16 or not: the same numbers on every machine
    assert make_accelerator(load_recipe(None, {"model.device": "cpu"})).mixed_precision == "no"
