"""The serving attention outside mixed forwards: a half-precision decoding step of many rows attends through
two matmuls instead of PyTorch's CPU flash kernel, with the kernel's result; fewer rows keep the kernel."""

from __future__ import annotations

import pytest
import torch

from tests.serve.test_continuous import Answer, reference, row
from tuneforge.models import native_bf16
from tuneforge.serve import slot_attention as sa
from tuneforge.serve.engine import Engine


class _Layer(torch.nn.Module):
    """What transformers' SDPA attention reads from an attention layer."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _decode_inputs(rows: int, dtype: torch.dtype):
    """One query per row over that row's own cache slot, the slots a view narrower than their storage (as
    the engine's ``SlotCache`` hands them out), each row with its own first and last column."""
    g = torch.Generator().manual_seed(rows)
    heads, kv_heads, dim, width = 6, 2, 16, 23
    storage = torch.randn(2, rows + 3, kv_heads, 40, dim, generator=g).to(dtype)
    key, value = storage[0, :rows, :, :width], storage[1, :rows, :, :width]
    query = torch.randn(rows, heads, 1, dim, generator=g).to(dtype)
    start = torch.randint(0, 10, (rows,), generator=g)
    end = torch.randint(12, width, (rows,), generator=g)
    j = torch.arange(width)
    mask = ((j >= start[:, None]) & (j <= end[:, None]))[:, None, None, :]  # [rows, 1, 1, width]
    return _Layer(heads // kv_heads), query, key, value, mask


def _kernel(layer, query, key, value, mask) -> torch.Tensor:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(layer, query, key, value, mask, scaling=0.25)[0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_decoding_step_of_many_rows_attends_as_the_kernel_does(dtype, monkeypatch):
    layer, query, key, value, mask = _decode_inputs(sa.MATMUL_MIN_ROWS + 1, dtype)
    # the reference: the kernel in float32 on the same (rounded) inputs
    want = _kernel(layer, query.float(), key.float(), value.float(), mask)

    def no_kernel(*args, **kwargs):
        raise AssertionError("a half-precision decoding step of many rows went to the SDPA kernel")

    monkeypatch.setattr("transformers.integrations.sdpa_attention.sdpa_attention_forward", no_kernel)
    got, _ = sa.slot_attention(layer, query, key, value, mask, scaling=0.25)
    assert got.shape == want.shape == (query.shape[0], 1, query.shape[1], query.shape[3])
    assert got.dtype == dtype
    assert (got.float() - want).abs().max() < 2e-2  # half precision's rounding, not another answer


@pytest.mark.parametrize(("rows", "dtype"), [(sa.MATMUL_MIN_ROWS - 1, torch.bfloat16), (sa.MATMUL_MIN_ROWS + 4, torch.float32)])
def test_few_rows_or_float32_keep_the_kernel(rows, dtype):
    layer, query, key, value, mask = _decode_inputs(rows, dtype)
    got, _ = sa.slot_attention(layer, query, key, value, mask, scaling=0.25)
    assert torch.equal(got, _kernel(layer, query, key, value, mask))


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
def test_a_bfloat16_engine_decoding_many_rows_together_keeps_each_rows_own_greedy_answer(tiny_model, tokenizer):
    model = tiny_model.to(torch.bfloat16).eval()
    prompts = [f"Question {i}: what comes after {i} {'and more ' * (i % 4)}?" for i in range(sa.MATMUL_MIN_ROWS + 2)]
    expected = [reference(model, tokenizer, p, 10) for p in prompts]
    engine = Engine(model, tokenizer, max_batch=len(prompts), batch_window_s=0)
    answers = [Answer() for _ in prompts]
    engine.start()
    try:
        engine.submit([row(tokenizer, p, a, 10) for p, a in zip(prompts, answers, strict=True)])
        assert [a.text for a in answers] == expected
        assert engine.stats["max_rows_in_batch"] == len(prompts)  # they decoded together
    finally:
        engine.stop(10)
