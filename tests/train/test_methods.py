"""Every method trains the weights it should and only those, and one optimizer step changes them."""

from __future__ import annotations

import pytest
import torch

from tuneforge.config.train import TrainConfig
from tuneforge.errors import UserError
from tuneforge.train.data import TokenizedExample
from tuneforge.train.methods import apply_method, count_parameters
from tuneforge.train.packing import collate
from tuneforge.train.schedule import lr_factor, make_optimizer
from tuneforge.train.steps import loss_sum


def _batch(tokenizer):
    msgs = [{"role": "user", "content": "A warm, funny film."}, {"role": "assistant", "content": "fresh"}]
    from tuneforge.data.chat import tokenize_conversation

    enc = tokenize_conversation(tokenizer, msgs)
    ex = TokenizedExample(enc["input_ids"], [*enc["labels"][1:], -100])
    return collate([ex, ex], [[0], [1]], tokenizer.pad_token_id)


@pytest.mark.parametrize(
    "train",
    [
        {"method": "full"},
        {"method": "lora"},
        {"method": "lora", "lora": {"use_dora": True, "use_rslora": True, "r": 4, "dropout": 0.0}},
        {"method": "ia3"},
        {"method": "prompt_tuning", "prompt": {"num_virtual_tokens": 4}},
        {"method": "prefix_tuning", "prompt": {"num_virtual_tokens": 4}},
        {"method": "freeze", "freeze": {"top_blocks": 1}},
        {"method": "freeze", "freeze": {"trainable_modules": ["q_proj"]}},
    ],
    ids=["full", "lora", "dora-rslora", "ia3", "prompt", "prefix", "freeze-top1", "freeze-named"],
)
def test_method_trains_only_its_weights(tiny_model, tokenizer, train):
    cfg = TrainConfig(**train, learning_rate=1e-2)
    total_before = sum(p.numel() for p in tiny_model.parameters())
    model = apply_method(tiny_model, cfg, tokenizer)
    counts = count_parameters(model)
    assert counts.trainable > 0
    if cfg.method == "full":
        assert counts.trainable == counts.total == total_before
    else:
        assert counts.trainable < counts.total / 2
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if cfg.method == "freeze" and cfg.freeze.top_blocks:
        assert all(".layers.1." in n or n.endswith("model.norm.weight") for n in trainable)
    if cfg.method == "freeze" and cfg.freeze.trainable_modules:
        assert trainable and all("q_proj" in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = make_optimizer(model, cfg)
    model.train()
    loss = loss_sum(model, _batch(tokenizer), prompt_learning=cfg.prompt_learning)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen_before.items())
    assert any(not torch.equal(params[n], v) for n, v in trained_before.items())


def test_freeze_with_unknown_module_names_the_problem(tiny_model):
    cfg = TrainConfig(method="freeze", freeze={"trainable_modules": ["no_such_layer"]})
    with pytest.raises(UserError, match="no_such_layer"):
        apply_method(tiny_model, cfg)


def test_qlora_without_cuda_is_a_clear_error():
    from tuneforge.train.methods import check_qlora_available

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(UserError, match="qlora needs a CUDA GPU"):
        check_qlora_available()


def test_schedule_warms_up_then_decays_to_zero():
    total, warmup = 100, 10
    assert lr_factor(0, total, warmup, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, total, warmup, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, total, warmup, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, total, warmup, "linear") == pytest.approx(0.0)
    assert lr_factor(50, total, warmup, "constant") == 1.0


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer):
    from tuneforge.models.tiny import tiny_model

    grads = []
    for checkpointing in (False, True):
        model = apply_method(tiny_model(tokenizer, seed=0), TrainConfig(method="lora", lora={"dropout": 0.0}))
        torch.manual_seed(0)
        for n, p in model.named_parameters():  # LoRA B starts at zero; make the update non-trivial
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        loss_sum(model, _batch(tokenizer)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_a_model_that_already_has_an_adapter_keeps_training_it(tiny_model, tokenizer):
    model = apply_method(tiny_model, TrainConfig(method="lora", lora={"r": 2}), tokenizer)
    assert apply_method(model, TrainConfig(method="lora"), tokenizer) is model
    merged = apply_method(model, TrainConfig(method="full"), tokenizer)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_qlora_base_keeps_its_compute_dtype_and_is_frozen(monkeypatch, tokenizer):
    """QLoRA loads the 4-bit base (bitsandbytes, CUDA: stood in for here by a tiny bf16 model) and keeps its
    other weights in the compute dtype: peft's prepare_model_for_kbit_training cast them to fp32, which ran
    the residual stream and every saved activation in fp32 (H200, SmolLM2: 17.5 GB against LoRA's 13.8)."""
    import transformers

    from tuneforge import models
    from tuneforge.config import load_recipe
    from tuneforge.models.tiny import tiny_model
    from tuneforge.train import methods

    loaded = {}

    def from_pretrained(path, **kwargs):
        loaded.update(kwargs)
        model = tiny_model(tokenizer).to(torch.bfloat16)
        model.is_loaded_in_4bit = True  # what bitsandbytes' loading sets (and peft's kbit helper looks at)
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(models, "resolve_model", lambda name: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for ckpt in (False, True):
        recipe = load_recipe(None, {"train.method": "qlora", "train.gradient_checkpointing": ckpt})
        model = methods._load_4bit(recipe)
        assert loaded["quantization_config"].load_in_4bit and loaded["dtype"] == torch.bfloat16
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # norms and embeddings too
        assert not any(p.requires_grad for p in model.parameters())
        assert (getattr(model, "_require_grads_hook", None) is not None) == ckpt  # checkpointing needs it
