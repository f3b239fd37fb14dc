"""The variable-length attention path (``model.attn_implementation: varlen``), checked on the CPU.

PyTorch's ``varlen_attn`` runs on CUDA only (``bench.gpu_train`` checks the real kernel against SDPA on a
GPU). Here a reference with its signature -- one causal SDPA call per example, a window counted as flash
attention counts it -- stands in for it, so what tuneforge adds is tested: the example bounds taken from
restarting position ids and padding masks, grouped K/V heads, sliding windows, the [B, L, H, D] result,
and the training engine's choice and hand-back to SDPA.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from tuneforge.models import varlen_attention
from tuneforge.train.data import TokenizedExample
from tuneforge.train.packing import collate
from tuneforge.train.steps import loss_sum

CALLS: list[dict] = []


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    """torch's varlen_attn on the CPU: [T, H, D] tensors, each example attending within its own bounds;
    ``window_size=(left, right)``: query i sees keys i-left..i+right (-1: unbounded)."""
    CALLS.append({"cu": cu_q.tolist(), "max": max_q, "window": window_size, "gqa": enable_gqa})
    assert torch.equal(cu_q, cu_k) and max_q == max_k == int((cu_q[1:] - cu_q[:-1]).max())
    out = []
    for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
        i = torch.arange(b - a)
        left, right = window_size
        allowed = torch.ones(b - a, b - a, dtype=torch.bool)
        if left >= 0:
            allowed &= i[None, :] >= i[:, None] - left
        if right >= 0:
            allowed &= i[None, :] <= i[:, None] + right
        out.append(F.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), attn_mask=allowed,
            scale=scale, enable_gqa=enable_gqa).transpose(0, 1))
    return torch.cat(out)


@pytest.fixture()
def cpu_kernel(monkeypatch):
    """``varlen`` usable on this CPU, backed by the reference above."""
    CALLS.clear()
    monkeypatch.setattr(varlen_attention, "kernel", lambda: reference_varlen)
    monkeypatch.setattr(varlen_attention, "available", lambda device: True)
    varlen_attention.register()


def examples(lengths: list[int], vocab: int, seed: int = 0) -> list[TokenizedExample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        out.append(TokenizedExample(input_ids=ids, target=ids[1:] + [-100]))
    return out


def test_bounds_come_from_restarting_positions_and_skip_padding():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    b = varlen_attention.packed_boundaries(pos)
    assert b["cu_seq_lens_q"].tolist() == [0, 3, 5, 9] and b["max_length_q"] == 4
    assert b["cu_seq_lens_q"].dtype == torch.int32
    # two rows, the second ends in 2 padding tokens; without position ids every row is one example
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    two = varlen_attention.packed_boundaries(torch.tensor([[0, 1, 0, 1], [0, 1, 2, 3]]), mask)
    assert two["cu_seq_lens_q"].tolist() == [0, 2, 4, 6] and two["max_length_q"] == 2
    cu, longest = varlen_attention.cumulative_lengths(None, mask, (2, 4), torch.device("cpu"))
    assert cu.tolist() == [0, 4, 6] and longest == 4


def _models(tokenizer, **overrides):
    from tuneforge.models.tiny import tiny_model

    sdpa = tiny_model(tokenizer, seed=0, **overrides)
    varlen = tiny_model(tokenizer, seed=0, **overrides)
    varlen.set_attn_implementation(varlen_attention.NAME)
    return sdpa, varlen


def test_packed_rows_give_sdpas_loss_and_gradients(tokenizer, cpu_kernel):
    sdpa, varlen = _models(tokenizer)
    ex = examples([7, 5, 9, 3, 6], len(tokenizer))
    batch = collate(ex, [[0, 1, 2], [3, 4]], pad_id=0)  # 21 and 9 tokens: the second row is padded
    losses = []
    for model in (sdpa, varlen):
        loss = loss_sum(model, batch)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    for (name, a), (_, b) in zip(sdpa.named_parameters(), varlen.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)
    # one call per layer per forward, each with the examples' bounds and grouped K/V heads (4 heads, 2 kv)
    assert CALLS and all(c["cu"][:4] == [0, 7, 12, 21] and c["gqa"] for c in CALLS)
    assert all(c["window"] == (-1, 0) for c in CALLS)


def test_without_bounds_the_layer_finds_them_from_the_padding_mask(cpu_kernel):
    class Module(torch.nn.Module):
        num_key_value_groups = 1

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out, weights = varlen_attention.varlen_attention_forward(Module(), q, k, v, mask, scaling=0.3)
    assert weights is None and out.shape == (2, 5, 2, 8)
    assert CALLS[-1]["cu"] == [0, 5, 8]
    ref = F.scaled_dot_product_attention(q[1:, :, :3], k[1:, :, :3], v[1:, :, :3], is_causal=True, scale=0.3)
    torch.testing.assert_close(out[1, :3], ref[0].transpose(0, 1))
    assert out[1, 3:].abs().sum() == 0  # padding positions: zero, as the flash path leaves them


def test_sliding_window_layers_keep_their_window(cpu_kernel):
    class Module(torch.nn.Module):
        pass

    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 1, 6, 4) for _ in range(3))
    pos = torch.arange(6)[None]
    out, _ = varlen_attention.varlen_attention_forward(Module(), q, k, v, None, position_ids=pos, sliding_window=3)
    assert CALLS[-1]["window"] == (2, 0)
    i = torch.arange(6)
    allowed = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 3)  # transformers' sliding-window rule
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(out[0], ref[0].transpose(0, 1))


def test_under_autocast_mixed_inputs_reach_the_kernel_in_the_autocast_dtype(cpu_kernel):
    class Module(torch.nn.Module):
        pass

    seen = []

    @functools.wraps(reference_varlen)  # the same signature: torch >= 2.11's
    def kernel(q, k, v, *args, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return reference_varlen(q, k, v, *args, **kwargs)

    varlen_attention.kernel = lambda: kernel  # monkeypatched by cpu_kernel: undone after the test
    q, k = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)  # fp32 after the rotary embedding
    v = torch.randn(1, 2, 4, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = varlen_attention.varlen_attention_forward(Module(), q, k, v, None)
    assert seen == [(torch.bfloat16,) * 3] and out.dtype == torch.bfloat16


def test_decoding_with_a_cache_is_refused(cpu_kernel):
    q, kv = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 5, 4)
    with pytest.raises(RuntimeError, match="not decoding with a KV cache"):
        varlen_attention.varlen_attention_forward(torch.nn.Module(), q, kv, kv, None)


def test_training_picks_varlen_where_the_kernel_runs_and_hands_sdpa_back(monkeypatch, tokenizer, tiny_model_dir,
                                                                         tmp_path):
    from transformers import Gemma2Config

    from tuneforge.config import load_recipe
    from tuneforge.train.methods import training_attention

    model = {"model.name": str(tiny_model_dir)}  # a Llama
    recipe = load_recipe(None, {**model, "model.device": "cpu"})
    assert training_attention(recipe) == "auto"  # a CPU: no variable-length kernel
    monkeypatch.setattr(varlen_attention, "available", lambda device: True)
    assert training_attention(recipe) == "varlen"
    assert training_attention(load_recipe(None, {**model, "model.attn_implementation": "sdpa"})) == "sdpa"
    assert training_attention(load_recipe(None, {**model, "train.method": "prompt_tuning"})) == "auto"
    fp32 = {"model.dtype": "float32", "train.mixed_precision": "no"}  # the kernel computes in bf16/fp16 only
    assert training_attention(load_recipe(None, {**model, **fp32})) == "auto"
    Gemma2Config().save_pretrained(tmp_path / "gemma2")  # soft-capped attention logits: not for this kernel
    assert training_attention(load_recipe(None, {"model.name": str(tmp_path / "gemma2")})) == "auto"

    _, varlen = _models(tokenizer)
    varlen_attention.use_sdpa(varlen)
    assert varlen.config._attn_implementation == "sdpa"


def test_varlen_on_a_cpu_is_a_clear_error(tiny_model_dir):
    from tuneforge.config.recipe import ModelConfig
    from tuneforge.errors import UserError
    from tuneforge.models import load_model

    with pytest.raises(UserError, match="varlen needs a CUDA device"):
        load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", attn_implementation="varlen"))


def test_a_training_run_attends_through_varlen_and_hands_back_a_model_that_generates(
        tmp_path, tiny_model_dir, tokenizer, cpu_kernel, capsys):
    """The engine end to end where ``auto`` picks varlen (a CUDA device; here the CPU reference): every
    forward of the run goes through the kernel with the batch's bounds, the losses are SDPA's, and the
    trained model comes back on SDPA, able to generate with a KV cache."""
    from tests.train.helpers import write_prepared, write_recipe
    from tuneforge.config import load_recipe
    from tuneforge.models.generate import chat_inputs
    from tuneforge.runs import create_run
    from tuneforge.train import train

    data = write_prepared(tmp_path / "data")
    losses = {}
    for attn in ("sdpa", "auto"):
        recipe = load_recipe(write_recipe(tmp_path / f"{attn}.yaml", tiny_model_dir, data, tmp_path / attn,
                                          lora={"dropout": 0.0}, max_steps=3, eval_every=3),
                             {"model.attn_implementation": attn, "model.device": "cpu"})
        CALLS.clear()
        result = train(recipe, create_run(recipe, "train"), data / "train.jsonl", data / "val.jsonl")
        losses[attn] = (result.initial_val_loss, result.final_val_loss)
        assert bool(CALLS) == (attn == "auto")
        assert ("attention: PyTorch's variable-length flash kernel" in capsys.readouterr().out) == (attn == "auto")
    assert all(len(c["cu"]) > 2 for c in CALLS)  # packed rows: several examples per row
    torch.testing.assert_close(losses["auto"], losses["sdpa"], rtol=1e-4, atol=1e-4)
    assert result.model.config._attn_implementation == "sdpa"
    inputs = chat_inputs(tokenizer, [{"role": "user", "content": "A film?"}])
    with torch.no_grad():  # decoding with a KV cache: varlen would refuse it
        out = result.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
