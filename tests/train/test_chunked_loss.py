"""Chunked cross-entropy: the same loss and gradients as full logits, without ever building them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tests.train.helpers import conversation, rotten_tomatoes_rows
from tuneforge.config.train import TrainConfig
from tuneforge.data.chat import IGNORE_INDEX
from tuneforge.train import chunked_loss, steps
from tuneforge.train.data import TokenizedExample
from tuneforge.train.methods import apply_method
from tuneforge.train.packing import collate, make_rows


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _reference(hidden, weight, bias, target, softcap=None):
    z = F.linear(hidden, weight, bias).float()
    if softcap is not None:
        z = torch.tanh(z / softcap) * softcap
    return F.cross_entropy(z, target, ignore_index=IGNORE_INDEX, reduction="none")


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_linear_cross_entropy_matches_full_logits(softcap):
    torch.manual_seed(0)
    n, h, v = 37, 16, 101
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    bias = torch.randn(v, requires_grad=True)
    target = torch.randint(0, v, (n,))
    target[::5] = IGNORE_INDEX
    ref = _reference(hidden, weight, bias, target, softcap)
    (ref.sum() * 0.37).backward()
    want = [x.grad.clone() for x in (hidden, weight, bias)]
    for x in (hidden, weight, bias):
        x.grad = None
    total, losses = chunked_loss.linear_cross_entropy(hidden, weight, target, bias, softcap, chunk=8)
    (total * 0.37).backward()
    assert torch.allclose(losses, ref.detach(), atol=1e-5)
    assert total.item() == pytest.approx(ref.sum().item(), abs=1e-4)
    for x, w in zip((hidden, weight, bias), want, strict=True):
        assert torch.allclose(x.grad, w, atol=1e-5), (x.shape, (x.grad - w).abs().max())


def _batch(tokenizer, n: int = 12) -> object:
    from tuneforge.data.chat import tokenize_conversation

    items = []
    for row in rotten_tomatoes_rows(n):
        enc = tokenize_conversation(tokenizer, conversation(row)["messages"], max_length=256)
        items.append(TokenizedExample(enc["input_ids"], [*enc["labels"][1:], IGNORE_INDEX]))
    # Packed rows of mixed lengths, the way training batches them; all tokens carry loss so the
    # head sees many positions (several chunks).
    items = [TokenizedExample(e.input_ids, [*e.input_ids[1:], IGNORE_INDEX]) for e in items]
    return collate(items, make_rows(items, 160, packing=True), tokenizer.pad_token_id)


def _grads(model, batch, chunked: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    if chunked:
        lm, why = chunked_loss.chunkable(model, False)
        assert lm is not None, why
        loss = steps.loss_sum(model, batch)
    else:
        logits, target, _ = steps._logits_and_target(model, batch, False)
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method,targets", [("full", None), ("lora", "all-linear"), ("lora", ["q_proj", "lm_head"])])
def test_tiny_model_loss_and_gradients_equal_the_unchunked_ones(tokenizer, method, targets, monkeypatch):
    from tuneforge.models.tiny import tiny_model

    cfg = TrainConfig(method=method, lora={"target_modules": targets} if targets else {})
    model = apply_method(tiny_model(tokenizer), cfg)
    model.train()
    if method == "lora":  # LoRA B starts at zero; make the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    batch = _batch(tokenizer)
    monkeypatch.setattr(chunked_loss, "CHUNK_BYTES", 4 * len(tokenizer) * 50)  # 50 positions per chunk
    assert batch.n_target > 150  # several chunks
    want_loss, want = _grads(model, batch, chunked=False)
    got_loss, got = _grads(model, batch, chunked=True)
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert got_loss / batch.n_target == pytest.approx(want_loss / batch.n_target, abs=1e-5)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-5, rtol=1e-4), name
    if method == "full":  # tied embeddings: the head's gradient reached the shared weight
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_full_logits_never_exist(tokenizer, monkeypatch):
    from tuneforge.models.tiny import tiny_model

    model = apply_method(tiny_model(tokenizer), TrainConfig(method="full"))
    batch = _batch(tokenizer)
    vocab = len(tokenizer)
    monkeypatch.setattr(chunked_loss, "CHUNK_BYTES", 4 * vocab * 32)
    for chunked in (False, True):
        mode = _LargestTensor()
        with mode:
            _grads(model, batch, chunked)
        if chunked:
            assert mode.largest <= max(32 * vocab, model.lm_head.weight.numel())
        else:  # the check would catch full logits
            assert mode.largest >= batch.n_target * vocab


def test_prompt_learning_and_unknown_models_fall_back(tokenizer):
    from tuneforge.models.tiny import tiny_model

    model = tiny_model(tokenizer)
    assert chunked_loss.chunkable(model, prompt_learning=True)[0] is None
    model.config.model_type = "cohere"  # its forward multiplies the logits by logit_scale
    lm, why = chunked_loss.chunkable(model, False)
    assert lm is None and "cohere" in why


def test_the_head_sees_a_multiple_of_row_multiple_positions(monkeypatch):
    seen = []
    apply = chunked_loss._LinearCrossEntropy.apply

    def recording(hidden, *args):
        seen.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(chunked_loss._LinearCrossEntropy, "apply", recording)
    torch.manual_seed(0)
    hidden, weight = torch.randn(37, 16, requires_grad=True), torch.randn(101, 16)
    target = torch.randint(0, 101, (37,))
    total, losses = chunked_loss.linear_cross_entropy(hidden, weight, target)
    total.backward()
    assert seen == [64] and losses.shape == (37,)  # padded for the allocator, per-token losses unpadded
    assert hidden.grad.shape == hidden.shape
    assert torch.allclose(losses, _reference(hidden, weight, None, target).detach(), atol=1e-5)
