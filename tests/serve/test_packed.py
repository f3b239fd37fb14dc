"""Serving from oneDNN's prepacked float32 weights: the plain layers' outputs, the weights held once, and
never under an adapter that reads the base weights itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.serve.test_continuous import Answer, reference, row
from tuneforge.serve.engine import PACK_MIN_WEIGHTS, Engine
from tuneforge.serve.packed import PackedLinear, available, pack_linears

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch has no oneDNN")


@pytest.mark.parametrize("shape", [(1, 48), (3, 48), (2, 5, 48), (33, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_a_packed_linear_gives_the_plain_layers_output(shape, bias):
    torch.manual_seed(0)
    plain = nn.Linear(48, 80, bias=bias)
    x = torch.randn(*shape)
    expected = plain(x)
    with torch.inference_mode():
        got = PackedLinear(plain, keep_weight=False)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_packed_model_keeps_its_logits_and_holds_each_weight_once(tiny_model, tokenizer):
    ids = torch.tensor([tokenizer("Hello there, how are you today?")["input_ids"]])
    with torch.inference_mode():
        before = tiny_model(ids).logits
    embedding = tiny_model.get_input_embeddings().weight
    n = pack_linears(tiny_model)
    linears = [m for m in tiny_model.modules() if isinstance(m, nn.Linear)]
    assert n == len(linears) > 0 and all(isinstance(m, PackedLinear) for m in linears)
    with torch.inference_mode():
        after = tiny_model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert torch.equal(after.argmax(-1), before.argmax(-1))
    head = tiny_model.get_output_embeddings()
    assert head.weight is embedding  # tied: the embedding still reads its rows, the packed copy comes on top
    placeholders = [m.weight for m in linears if m is not head]
    # the packed copy replaced the plain weights: each placeholder is one float, seen at the weight's shape
    assert all(w.untyped_storage().nbytes() == 4 and w.dtype == torch.float32 for w in placeholders)


def test_the_engine_packs_only_the_large_layers_by_default(tiny_model, tokenizer):
    """oneDNN's call overhead outweighs its GEMM on small matrices: they stay plain Linear layers."""
    large = [m for m in tiny_model.modules() if type(m) is nn.Linear and m.weight.numel() >= PACK_MIN_WEIGHTS]
    assert 0 < len(large) < 15  # the tiny model: its head is large, its block layers are not
    engine = Engine(tiny_model, tokenizer)
    assert engine.packed_linears == len(large)
    packed = [m for m in tiny_model.modules() if isinstance(m, PackedLinear)]
    assert [m.weight.numel() for m in packed] == [m.weight.numel() for m in large]
    assert Engine(tiny_model, tokenizer, pack_weights=None).packed_linears == 0


def _fresh(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def _dora_adapter(model_dir, path):
    """A DoRA adapter whose magnitudes differ from the base weights' norms (as after training)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    model = get_peft_model(_fresh(model_dir), LoraConfig(r=4, lora_alpha=8, use_dora=True,
                                                         target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_magnitude" in name:
                param.add_(torch.randn_like(param) * 0.5)
    model.save_pretrained(path)
    return path


def test_a_dora_adapter_gets_the_plain_weights_back_and_its_own_answers(tiny_model_dir, tokenizer, lora_runs,
                                                                        tmp_path):
    """DoRA rescales by the norm of the base weight plus its delta: a placeholder weight would change the
    answers it gives, so before loading one the engine puts the plain weights back."""
    from peft import PeftModel

    lora = lora_runs["lora-a"] / "adapter"
    dora = _dora_adapter(tiny_model_dir, tmp_path / "dora")
    engine = Engine(_fresh(tiny_model_dir), tokenizer, {"lora": lora, "dora": dora}, batch_window_s=0,
                    pack_weights=0)  # every Linear: the tiny model's are below the default size
    assert engine.packed_linears == 15
    prompt, n = "What is 2 plus 2, and why is that so?", 10
    expected = {name: reference(PeftModel.from_pretrained(_fresh(tiny_model_dir), str(path)).eval(), tokenizer,
                                prompt, n) for name, path in (("lora", lora), ("dora", dora))}
    assert expected["dora"] != reference(_fresh(tiny_model_dir), tokenizer, prompt, n)  # the adapter matters
    engine.start()
    try:
        for name in ("lora", "dora", "lora"):  # packed, then plain weights again (and LoRA still right)
            answer = Answer()
            engine.submit([row(tokenizer, prompt, answer, n, adapter=name)])
            assert answer.text == expected[name], name
        assert engine.packed_linears == 0
        assert not any(isinstance(m, PackedLinear) for m in engine.model.modules())
    finally:
        engine.stop(10)
