"""Serving from oneDNN's prepacked float32 and bfloat16 weights: the plain layers' outputs, the weights held
once, and never under an adapter that reads the base weights itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.serve.test_continuous import Answer, reference, row
from tuneforge.models import native_bf16
from tuneforge.serve.engine import Engine
from tuneforge.serve.packed import MIN_WEIGHTS, PackedLinear, available, pack_linears

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


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
@pytest.mark.parametrize("shape", [(1, 48), (2, 5, 48), (33, 48)])
def test_a_packed_bfloat16_linear_gives_the_same_sums_as_the_plain_one(shape):
    torch.manual_seed(0)
    plain = nn.Linear(48, 80).to(torch.bfloat16)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = plain(x)
        packed = PackedLinear(plain, keep_weight=False)
        got = packed(x)
    assert got.dtype == torch.bfloat16 and packed.weight.untyped_storage().nbytes() == 2
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


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


def test_the_engine_packs_only_the_large_layers_by_default(tiny_model, tokenizer, monkeypatch):
    """Without AVX-512, oneDNN's call overhead outweighs its GEMM on small matrices: they stay plain Linear layers."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    large = [m for m in tiny_model.modules() if type(m) is nn.Linear and m.weight.numel() >= MIN_WEIGHTS[torch.float32]]
    assert 0 < len(large) < 15  # the tiny model (15 Linear layers): its head is large, its block layers are not
    engine = Engine(tiny_model, tokenizer)
    assert engine.packed_linears == len(large)
    packed = [m for m in tiny_model.modules() if isinstance(m, PackedLinear)]
    assert [m.weight.numel() for m in packed] == [m.weight.numel() for m in large]
    assert Engine(tiny_model, tokenizer, pack_weights=None).packed_linears == 0


def test_the_engine_packs_every_float32_layer_where_torch_runs_avx512(tiny_model, tokenizer, monkeypatch):
    """With AVX-512 kernels oneDNN is as quick for one row and quicker for many at every shape."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    linears = [m for m in tiny_model.modules() if type(m) is nn.Linear]
    engine = Engine(tiny_model, tokenizer)
    assert engine.packed_linears == len(linears) > 1
    assert not any(type(m) is nn.Linear for m in tiny_model.modules())


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


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
def test_a_bfloat16_model_is_served_packed_with_its_own_greedy_answers(tiny_model_dir, tokenizer, lora_runs):
    """`tuneforge serve --dtype bfloat16`: every bfloat16 Linear is packed by default (small ones too), and
    the answers, rows joining mid-decode and a LoRA adapter's rows among them, are the model's own
    one-at-a-time greedy answers in bfloat16."""
    from peft import PeftModel

    def fresh():
        return _fresh(tiny_model_dir).to(torch.bfloat16)

    lora = lora_runs["lora-a"] / "adapter"
    plan = [(None, "Hello there"), ("lora", "Hello there"), (None, "What is 2 plus 2, and why is that so?"),
            ("lora", "A much longer prompt about many different things")]
    n = 12
    expected = [reference(fresh() if ad is None else PeftModel.from_pretrained(fresh(), str(lora)).eval(),
                          tokenizer, prompt, n) for ad, prompt in plan]
    assert expected[0] != expected[1]  # the adapter changes the answer, so a mix-up would show
    engine = Engine(fresh(), tokenizer, {"lora": lora}, max_batch=4, batch_window_s=0)
    assert engine.packed_linears == 15  # all of them: bfloat16's bound is 0
    assert engine.describe() == "weights bfloat16 on cpu, 15 Linear layers prepacked (oneDNN)"
    answers = [Answer() for _ in plan]

    def join_late(n_pieces: int) -> None:  # in the worker thread, between two decoding steps
        if n_pieces == 4:
            engine.submit([row(tokenizer, p, a, n, adapter=ad) for (ad, p), a in zip(plan[2:], answers[2:],
                                                                                     strict=True)])

    answers[0].on_delta = join_late
    engine.start()
    try:
        engine.submit([row(tokenizer, p, a, n, adapter=ad) for (ad, p), a in zip(plan[:2], answers[:2], strict=True)])
        assert [a.text for a in answers] == expected
        assert engine.stats["joined_running"] == 2
        assert all(m.weight.dtype == torch.bfloat16 for m in engine.model.modules() if isinstance(m, PackedLinear))
    finally:
        engine.stop(10)


@pytest.mark.slow
def test_the_bundled_model_served_in_bfloat16_picks_fp32s_token_almost_everywhere():
    """bfloat16 keeps 8 bits of mantissa: on the real model its greedy token must stay float32's nearly
    everywhere (on float32's own answers, so one early flip does not count for every later position)."""
    from tests.agreement import top1_agreement
    from tuneforge.models import load_model, load_tokenizer

    name = "smollm2-135m-instruct"
    fp32, tok = load_model(name, device="cpu").eval(), load_tokenizer(name)
    bf16 = Engine(load_model(name, device="cpu", dtype="bfloat16").eval(), tok).model  # packed as served
    agree, total = top1_agreement(fp32, bf16, tok)
    assert agree / total >= 0.9, agree / total  # measured 105 of 107 (0.98)
