"""Batched generation for evaluation: chat template, left padding, KV cache, stop strings.

Prompts are sorted by length so that each batch pads little (and bounded by tokens, see
``batching``), generated with the KV cache (the
``generate`` default), then returned in the caller's order. With ``temperature > 0`` sampling is
reproducible: every batch reseeds torch from ``seed`` and the batch index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def render_prompt(tokenizer: PreTrainedTokenizerBase, conversation: list[dict]) -> str:
    """The conversation as the model sees it, ready for the assistant's answer."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    # A base model without a template: plain "role: content" lines and an open assistant turn.
    lines = [f"{m['role']}: {m['content']}" for m in conversation]
    return "\n".join(lines) + "\nassistant:"


def prompt_token_counts(tokenizer: PreTrainedTokenizerBase, conversations: list[list[dict]]) -> list[int]:
    """Prompt length in tokens of each conversation (what a request costs before any output)."""
    return [len(tokenizer(render_prompt(tokenizer, c), add_special_tokens=False)["input_ids"]) for c in conversations]


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """Text up to (not including) the earliest stop string."""
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict]],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    temperature: float = 0.0,
    seed: int = 0,
    stop: list[str] | None = None,
    progress: bool = True,
    max_batch_tokens: int | None = None,
) -> list[str]:
    """The model's answer to each conversation, in order (greedy unless ``temperature > 0``); a batch holds
    at most ``batch_size`` prompts and ``max_batch_tokens`` padded tokens, new ones included."""
    import torch

    from tuneforge.eval.batching import token_batches

    prompts = [render_prompt(tokenizer, c) for c in conversations]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    batches = token_batches(lengths, batch_size, max_batch_tokens, extra=max_new_tokens)
    outputs: list[str] = [""] * len(prompts)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model.device
    bar = tqdm(total=len(prompts), desc="generating", unit="prompt", disable=not progress or len(prompts) < 2)
    try:
        for b, idx in enumerate(batches):
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            kwargs: dict = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id, do_sample=temperature > 0)
            if temperature > 0:
                kwargs.update(temperature=temperature, top_p=1.0, top_k=0)
            else:  # make greedy explicit: a model's generation_config may default to sampling
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if stop:
                kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
            torch.manual_seed(seed + b)
            with torch.inference_mode():
                out = model.generate(**enc, **kwargs)
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            for i, row in zip(idx, new_tokens, strict=True):
                text = tokenizer.decode(row, skip_special_tokens=True)
                outputs[i] = cut_at_stop(text, stop).strip()
            bar.update(len(idx))
    finally:
        tokenizer.padding_side = old_side
        bar.close()
    return outputs
