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
    the tiny model's embedding is tied to its head, so it reads the same int8 values, as in the folder."""
    from tuneforge.export.quantize import _block_linears

    model = copy.deepcopy(tiny_model)
    for name in _block_linears(model):
        lin = model.get_submodule(name)
        q, scale = quantize_weight(lin.weight)
        lin.weight.data = q.float() * scale[:, None]
    q, scale = quantize_weight(model.lm_head.weight)
    model.lm_head.weight.data = q.float() * scale[:, None]  # in place: the tied embedding too
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


def test_the_head_is_int8_and_a_tied_embedding_reads_it_stored_once(int8_dir, tiny_model):
    # a decoding step multiplies every row by the whole head: float32 there cost more than all int8 blocks
    from safetensors import safe_open

    model = load_int8_model(int8_dir)
    assert model.lm_head.qweight.dtype == torch.int8
    with safe_open(str(int8_dir / "model.safetensors"), "pt") as f:
        stored = list(f.keys())
    assert "lm_head.qweight" in stored and not any("embed_tokens" in k for k in stored)  # the vocab matrix once
    ids = torch.tensor([[1, 5, 9]])
    q, scale = quantize_weight(tiny_model.get_input_embeddings().weight)
    assert torch.equal(model.get_input_embeddings()(ids), q[ids].float() * scale[ids].unsqueeze(-1))


def test_a_folder_written_with_a_float32_head_still_loads(tmp_path, tiny_model, tokenizer):
    import json

    from safetensors.torch import load_file, save_file

    from tuneforge.export.quantize import MARKER

    out = tmp_path / "old-int8"
    save_int8(tiny_model, tokenizer, out)
    # rewrite it as the exports before the head was quantized: a float32 embedding, the head tied to it
    state = load_file(str(out / "model.safetensors"))
    del state["lm_head.qweight"], state["lm_head.scale"]
    state["model.embed_tokens.weight"] = tiny_model.get_input_embeddings().weight.detach().clone()
    save_file(state, str(out / "model.safetensors"))
    meta = json.loads((out / MARKER).read_text())
    meta["modules"].remove("lm_head")
    del meta["embedding_from_head"]
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
    assert rel < 1e-3  # float16 rounding of the int8 values only: the activations stay float32


@pytest.mark.slow
def test_the_bundled_models_int8_export_picks_fp32s_token_almost_everywhere(tmp_path):
    # On the real model, not the random tiny one: quantizing activations per tensor (the dynamic int8 Linear)
    # agreed with float32's top-1 token on 43% of positions, because of SmolLM2's outlier channels.
    from tests.agreement import top1_agreement
    from tuneforge.models import load_model, load_tokenizer

    name = "smollm2-135m-instruct"
    model, tok = load_model(name, device="cpu").eval(), load_tokenizer(name)
    save_int8(model, tok, tmp_path / "int8")
    int8 = load_int8_model(tmp_path / "int8")
    agree, total = top1_agreement(model, int8, tok)
    assert agree / total >= 0.9  # measured 0.95 (weight-only int8 on every Linear and the head)


def test_serving_an_int8_export_in_another_dtype_is_refused_and_its_format_is_said(int8_dir, tokenizer):
    import tuneforge.config as C
    from tuneforge.errors import UserError
    from tuneforge.serve.engine import Engine
    from tuneforge.serve.server import load_base

    with pytest.raises(UserError, match="int8 export is served in its own format.*--dtype bfloat16"):
        load_base(C.ModelConfig(name=str(int8_dir), dtype="bfloat16"))
    model, tok = load_base(C.ModelConfig(name=str(int8_dir)))
    assert Engine(model, tok).describe().startswith("weights int8 (float32 activations) on cpu")
