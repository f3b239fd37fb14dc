"""Chat formatting through the model's own chat template, with completion-only labels.

The loss must cover what the assistant says and nothing else: system and user tokens, and the template's
"<|im_start|>assistant\n" header, get label -100. We find the assistant spans by rendering the
conversation prefix by prefix: tokens of ``messages[:i]`` with a generation prompt are the context of
assistant turn i, and tokens of ``messages[:i+1]`` end right after that turn (its end-of-turn token
included, so the model learns to stop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], gen_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=gen_prompt, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    max_length: int | None = None,
    train_on: str = "all_assistant",
) -> dict[str, list[int]]:
    """Token ids and labels for one conversation.

    ``train_on``: ``all_assistant`` trains on every assistant turn, ``last_assistant`` on the final one.
    Sequences longer than ``max_length`` are truncated from the right.
    """
    if not tokenizer.chat_template:
        raise UserError("the tokenizer has no chat template; use a chat model or a prompt/completion format")
    full = _render(tokenizer, messages, gen_prompt=False)
    labels = [IGNORE_INDEX] * len(full)
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "last_assistant":
        assistant_turns = assistant_turns[-1:]
    for i in assistant_turns:
        start = len(_render(tokenizer, messages[:i], gen_prompt=True))
        end = len(_render(tokenizer, messages[: i + 1], gen_prompt=False))
        prefix = _render(tokenizer, messages[: i + 1], gen_prompt=False)
        if full[:end] != prefix:
            raise UserError("the chat template is not prefix-stable; cannot mark assistant tokens for training")
        labels[start:end] = full[start:end]
    if max_length is not None and len(full) > max_length:
        full, labels = full[:max_length], labels[:max_length]
    return {"input_ids": full, "labels": labels, "attention_mask": [1] * len(full)}


def prompt_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Split a conversation into (everything before the final assistant turn, that turn's text)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise UserError("a conversation used for evaluation must end with an assistant message")
    return messages[:-1], messages[-1]["content"]
