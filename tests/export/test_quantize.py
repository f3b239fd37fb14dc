"""Serving an int8 export: the dynamic int8 kernel (fast on x86) answers like the int8 weights it loads."""

from __future__ import annotations

import copy

import pytest
import torch

from tuneforge.export.quantize import load_int8_model, quantize_weight, save_int8

PROMPTS = ["Hello there", "What is 2 plus 2, and why is that so?", "A much longer prompt about many things"]


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory, tokenizer):
    from tuneforge.models.tiny import tiny_model

    out = tmp_path_factory.mktemp("int8") / "merged-int8"
    save_int8(tiny_model(tokenizer, seed=0), tokenizer, out)
    return out


def _dequantised(tiny_model):
    """The float32 model whose block and head weights are exactly what the int8 folder holds (q x scale);
    the head gets its own tensor (the tied embedding keeps its float32 values, as in the folder)."""
    from tuneforge.export.quantize import _block_linears

    model = copy.deepcopy(tiny_model)
    for name in _block_linears(model):
        lin = model.get_submodule(name)
        q, scale = quantize_weight(lin.weight)
        lin.weight.data = q.float() * scale[:, None]
    q, scale = quantize_weight(model.lm_head.weight)
    model.lm_head.weight = torch.nn.Parameter(q.float() * scale[:, None])
    return model.eval()


def _greedy(model, tokenizer, prompt: str, n: int = 12) -> list[int]:
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or 0)
    return out[0, ids.shape[1]:].tolist()


def test_cpu_float32_serving_does_not_use_the_slow_weight_only_kernel(int8_dir, tokenizer, monkeypatch):
    def slow(*args, **kwargs):
        raise AssertionError("torch._weight_int8pack_mm is 5-100x slower than fp32 on x86 (bench.int8_kernels)")

    monkeypatch.setattr(torch, "_weight_int8pack_mm", slow)
    model = load_int8_model(int8_dir)
    assert len(_greedy(model, tokenizer, PROMPTS[0], 4)) == 4


def test_the_output_head_is_int8_and_the_embedding_keeps_float32(int8_dir, tiny_model):
    # a decoding step multiplies every row by the whole head: float32 there cost more than all int8 blocks
    model = load_int8_model(int8_dir)
    assert model.lm_head.qweight.dtype == torch.int8
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert torch.equal(model.get_input_embeddings().weight, tiny_model.get_input_embeddings().weight)


def test_a_folder_written_with_a_float32_head_still_loads(tmp_path, tiny_model, tokenizer):
    import json

    from tuneforge.export.quantize import MARKER

    out = tmp_path / "old-int8"
    save_int8(tiny_model, tokenizer, out)
    # rewrite it as the exports before the head was quantized: float32 head tied to the embedding
    from safetensors.torch import load_file, save_file

    state = load_file(str(out / "model.safetensors"))
    del state["lm_head.qweight"], state["lm_head.scale"]
    save_file(state, str(out / "model.safetensors"))
    meta = json.loads((out / MARKER).read_text())
    meta["modules"].remove("lm_head")
    (out / MARKER).write_text(json.dumps(meta))
    model = load_int8_model(out)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert len(_greedy(model, tokenizer, PROMPTS[0], 4)) == 4


def test_int8_greedy_answers_equal_the_dequantised_int8_weights(int8_dir, tiny_model, tokenizer):
    model = load_int8_model(int8_dir)
    reference = _dequantised(tiny_model)
    assert [_greedy(model, tokenizer, p) for p in PROMPTS] == [_greedy(reference, tokenizer, p) for p in PROMPTS]


def test_int8_logits_stay_within_three_percent_of_the_dequantised_weights(int8_dir, tiny_model, tokenizer):
    model = load_int8_model(int8_dir)
    reference = _dequantised(tiny_model)
    ids = torch.tensor([tokenizer(PROMPTS[1])["input_ids"]])
    with torch.inference_mode():
        got, want = model(ids).logits, reference(ids).logits
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert 0 < rel < 0.03  # not zero: the activations really are quantized (measured 1.3% on the tiny model)
