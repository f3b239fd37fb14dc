"""The bf16 (GPU) path's choices, checked on the CPU: under autocast the chunked head computes in the
autocast dtype (as ``nn.Linear`` would) and the fused LoRA layer hands over to PEFT's forward."""

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
