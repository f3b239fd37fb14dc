"""Plain-text contexts start with BOS for tokenizers that add one (Gemma, Llama), as the models were trained."""

from __future__ import annotations

import torch

from tuneforge.eval.loglik import bos_prefix, score_continuations, with_bos


class BosTokenizer:
    """Wraps the real tokenizer, adding a BOS as Gemma's and Llama's tokenizers do by default."""

    def __init__(self, inner, bos_id: int) -> None:
        self.inner, self.bos_token_id = inner, bos_id
        self.pad_token_id, self.eos_token_id = inner.pad_token_id, inner.eos_token_id

    def __call__(self, text, add_special_tokens=True, **kw):
        ids = self.inner(text, add_special_tokens=False, **kw)["input_ids"]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


class Recorder(torch.nn.Module):
    """A model that records the ids it is given and returns flat logits."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.seen = vocab, []
        self.device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=None):
        self.seen.append([row[m.bool()].tolist() for row, m in zip(input_ids, attention_mask, strict=True)])
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


def test_bos_is_added_to_plain_contexts_once(tokenizer):
    assert bos_prefix(tokenizer) == []  # SmolLM2's GPT-2-style tokenizer adds nothing: its scores are unchanged
    bos = BosTokenizer(tokenizer, bos_id=1)
    assert bos_prefix(bos) == [1]
    assert with_bos([5, 6], [1]) == [1, 5, 6] and with_bos([1, 5], [1]) == [1, 5]  # a chat template's own BOS kept
    model = Recorder(len(tokenizer))
    score_continuations(model, bos, [("The capital of France is", " Paris")], progress=False)
    ids = model.seen[0][0]
    assert ids[0] == 1 and ids.count(1) == 1
