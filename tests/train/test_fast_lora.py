"""The fused LoRA linear gives PEFT's outputs and gradients, and steps aside where it does not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tuneforge.config.train import TrainConfig
from tuneforge.train.fast_lora import FastLoraLinear, use_fast_lora
from tuneforge.train.methods import apply_method


class _Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(12, 20)
        self.down = torch.nn.Linear(20, 12, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def _pair(dropout: float = 0.0, **extra):
    """(PEFT's LoRA model, the same model switched to the fused layer), non-zero B so LoRA matters."""
    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["up", "down"], **extra)
    peft = get_peft_model(_Two(), cfg)
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    fast = copy.deepcopy(peft)
    assert use_fast_lora(fast) == 2
    return peft, fast


def _grads(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.detach(), x.grad, grads


def test_fused_lora_matches_peft_outputs_and_every_gradient():
    peft, fast = _pair()
    x = torch.randn(3, 7, 12)
    out_p, gx_p, g_p = _grads(peft, x)
    out_f, gx_f, g_f = _grads(fast, x)
    assert isinstance(fast.base_model.model.up, FastLoraLinear)
    torch.testing.assert_close(out_f, out_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx_f, gx_p, rtol=1e-5, atol=1e-6)
    assert g_f.keys() == g_p.keys() and len(g_f) == 4  # A and B of both layers
    for n in g_p:
        torch.testing.assert_close(g_f[n], g_p[n], rtol=1e-5, atol=1e-6)


def test_fused_lora_with_a_trainable_base_weight_and_bias_gets_their_gradients_too():
    peft, fast = _pair()
    for m in (peft, fast):
        m.base_model.model.up.base_layer.weight.requires_grad_(True)
        m.base_model.model.up.base_layer.bias.requires_grad_(True)
    x = torch.randn(5, 12)
    _, _, g_p = _grads(peft, x)
    _, _, g_f = _grads(fast, x)
    assert any("base_layer.bias" in n for n in g_f)
    for n in g_p:
        torch.testing.assert_close(g_f[n], g_p[n], rtol=1e-5, atol=1e-6)


def test_disabled_adapter_and_merged_weights_take_peft_path():
    peft, fast = _pair()
    x = torch.randn(4, 12)
    with fast.disable_adapter():
        base_out = fast(x)
    with peft.disable_adapter():
        torch.testing.assert_close(base_out, peft(x))
    assert not torch.allclose(base_out, fast(x))  # the adapter is back on afterwards
    expected = fast(x).detach()
    merged = fast.merge_and_unload()
    torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)


def test_dropout_falls_back_to_peft_which_applies_it():
    _, fast = _pair(dropout=0.5)
    layer = fast.base_model.model.up
    x = torch.randn(4, 12)
    assert layer._fast_adapter(x, (), {}) is None
    fast.train()
    torch.manual_seed(1)
    a = fast(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, fast(x))  # dropout masks differ: PEFT's dropout ran


def test_autocast_falls_back():
    _, fast = _pair()
    x = torch.randn(4, 12)
    layer = fast.base_model.model.up
    assert layer._fast_adapter(x, (), {}) == "default"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer._fast_adapter(x, (), {}) is None


def test_lora_method_uses_fused_layers_and_dora_keeps_peft(tiny_model):
    lora = apply_method(copy.deepcopy(tiny_model), TrainConfig(method="lora"))
    assert any(isinstance(m, FastLoraLinear) for m in lora.modules())
    dora = apply_method(copy.deepcopy(tiny_model), TrainConfig(method="lora", lora={"use_dora": True, "dropout": 0.0}))
    layers = [m for m in dora.modules() if isinstance(m, FastLoraLinear)]
    x = torch.randn(2, layers[0].in_features)
    assert layers and all(m._fast_adapter(x, (), {}) is None for m in layers)  # DoRA: PEFT's variant forward


@pytest.mark.parametrize("bias", [True, False])
def test_saved_adapter_state_is_unchanged_by_the_switch(bias):
    peft, fast = _pair(lora_bias=bias)
    assert peft.state_dict().keys() == fast.state_dict().keys()


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_a_half_precision_base_with_float32_adapters_computes_as_under_autocast(half):
    """model.dtype: bfloat16 (the frozen base halved, PEFT's adapters float32): every product in the half dtype,
    the adapter's gradients float32; every result within a few half-dtype roundings of PEFT's, and no
    further from the float32 model's than PEFT's under autocast (the usual mixed-precision training)."""
    peft, fast = _pair()
    exact = copy.deepcopy(peft)  # all float32
    under_autocast = copy.deepcopy(peft)
    for m in (peft, fast, under_autocast):
        for layer in (m.base_model.model.up, m.base_model.model.down):
            layer.base_layer.to(half)
    assert fast.base_model.model.up.lora_A["default"].weight.dtype == torch.float32
    x = torch.randn(3, 7, 12).to(half)
    inner = FastLoraLinear._fast_adapter
    picked = []
    FastLoraLinear._fast_adapter = lambda self, *a: picked.append(inner(self, *a)) or picked[-1]
    try:
        out_p, gx_p, g_p = _grads(peft, x)
        out_f, gx_f, g_f = _grads(fast, x)
    finally:
        FastLoraLinear._fast_adapter = inner
    with torch.autocast("cpu", dtype=half):
        _, _, g_a = _grads(under_autocast, x)
    out_e, _, g_e = _grads(exact, x.float())
    assert picked == ["default", "default"]  # both layers took the fused path
    assert out_f.dtype == gx_f.dtype == half

    def close(got, want, ref):  # within 1% of the tensor's largest value: a few roundings to the half dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=1e-2 * float(ref.abs().max()))

    close(out_f, out_p, out_e)
    close(gx_f, gx_p, gx_p)
    assert g_f.keys() == g_p.keys() and len(g_f) == 4
    for n in g_p:
        assert g_f[n].dtype == torch.float32
        close(g_f[n], g_p[n], g_e[n])
        err_fast, err_autocast = (g_f[n] - g_e[n]).abs().max(), (g_a[n] - g_e[n]).abs().max()
        assert err_fast <= 1.5 * err_autocast + 1e-3 * g_e[n].abs().max(), n
