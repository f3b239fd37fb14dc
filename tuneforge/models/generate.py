"""Single-conversation streaming generation for `tuneforge generate` and `tuneforge chat`.

Batched generation for evaluation lives in ``tuneforge.eval.generation``; this module streams one
answer token by token to a terminal.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def chat_inputs(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], device=None) -> dict:
    """Tokenize a conversation with the model's chat template, ready for the assistant's turn."""
    if tokenizer.chat_template:
        enc = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:  # a base model without a template: plain text continuation of the last message
        enc = tokenizer(messages[-1]["content"], return_tensors="pt")
    return {k: v.to(device) if device is not None else v for k, v in enc.items()}


def stream_chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield the assistant's answer piece by piece as it is generated."""
    import torch
    from transformers import TextIteratorStreamer

    inputs = chat_inputs(tokenizer, messages, device=model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(
        **inputs,
        max_new_tokens=max_new_tokens,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=temperature > 0,
    )
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p)
    if seed is not None:
        torch.manual_seed(seed)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if errors:
        raise errors[0]
