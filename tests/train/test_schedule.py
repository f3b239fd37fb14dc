"""Which AdamW kernel a run gets on which device (the CPU-side selection logic of the GPU path too)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from tuneforge.config.train import TrainConfig
from tuneforge.train.schedule import adamw_kernel, make_optimizer


def _fake(device: str, dtype=torch.float32, sparse: bool = False):
    return SimpleNamespace(device=torch.device(device), dtype=dtype, is_sparse=sparse)


def test_cpu_and_cuda_float_parameters_get_the_fused_kernel():
    assert adamw_kernel([torch.zeros(3, requires_grad=True)]) == {"fused": True}
    assert adamw_kernel([_fake("cuda"), _fake("cuda", torch.bfloat16)]) == {"fused": True}


def test_other_devices_and_tensors_keep_foreach():
    assert adamw_kernel([_fake("cpu"), _fake("meta")]) == {"foreach": True}
    assert adamw_kernel([_fake("mps")]) == {"foreach": True}
    assert adamw_kernel([_fake("cpu", sparse=True)]) == {"foreach": True}
    assert adamw_kernel([]) == {"foreach": True}


def test_fused_optimizer_steps_like_foreach():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    twin = torch.nn.Linear(8, 4)
    twin.load_state_dict(model.state_dict())
    fused = make_optimizer(model, TrainConfig(learning_rate=1e-2, weight_decay=0.1))
    assert fused.param_groups[0]["fused"]
    ref = torch.optim.AdamW([{"params": [twin.weight], "weight_decay": 0.1}, {"params": [twin.bias], "weight_decay": 0.0}],
                            lr=1e-2, betas=fused.defaults["betas"], foreach=True)
    x = torch.randn(16, 8)
    for _ in range(3):
        for m, opt in ((model, fused), (twin, ref)):
            m(x).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(model.weight, twin.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.bias, twin.bias, rtol=1e-5, atol=1e-6)
