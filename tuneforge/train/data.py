"""Reading prepared JSONL splits and turning conversations into token ids with completion-only labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.data.chat import IGNORE_INDEX, tokenize_conversation
from tuneforge.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class TokenizedExample:
    """One tokenized conversation. ``target[t]`` is the token position t must predict (-100: no loss).

    Targets are shifted per example (not per packed row), so packing never asks the last token of one
    example to predict the first token of the next.
    """

    input_ids: list[int]
    target: list[int]
    task: str | None = None  # the multi-task tag (``meta.task`` of the prepared line), kept through packing

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.target if t != IGNORE_INDEX)


def read_tagged(path: str | Path) -> list[tuple[list[dict[str, Any]], str | None]]:
    """(messages, task tag) of every line of a prepared JSONL split; the tag is ``meta.task`` or None."""
    from tuneforge.data.io import read_examples

    p = Path(path)
    rows = []
    for record in read_examples(p):
        meta = record.get("meta")
        task = meta.get("task") if isinstance(meta, dict) else None
        rows.append((record["messages"], str(task) if task is not None else None))
    if not rows:
        raise UserError(f"{p}: no examples")
    return rows


def tokenize_file(
    tokenizer: PreTrainedTokenizerBase, path: str | Path, max_length: int, train_on: str = "all_assistant"
) -> list[TokenizedExample]:
    """Tokenize every conversation of a split; examples left with no trainable token are dropped (and counted)."""
    examples = []
    dropped = 0
    for messages, task in read_tagged(path):
        enc = tokenize_conversation(tokenizer, messages, max_length=max_length, train_on=train_on)
        ids, labels = enc["input_ids"], enc["labels"]
        ex = TokenizedExample(input_ids=ids, target=[*labels[1:], IGNORE_INDEX], task=task)
        if ex.n_target == 0:
            dropped += 1
            continue
        examples.append(ex)
    if dropped:
        log.warning("%s: %d examples have no assistant tokens within max_length and were skipped", path, dropped)
    if not examples:
        raise UserError(f"{path}: no example has assistant tokens within train.max_length={max_length}")
    return examples
