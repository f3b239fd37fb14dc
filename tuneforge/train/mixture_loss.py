"""Loss per task: mean next-token loss on the assistant tokens of each task's examples.

Generation metrics need a model that already answers in the right shape; loss is meaningful from the
first step (and on tiny test models), so every strategy report carries it next to the task scores.
Tokens are weighted equally: a task's loss is total loss over its assistant tokens / their number.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.data.chat import IGNORE_INDEX, tokenize_conversation
from tuneforge.train.mixture import read_jsonl

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def task_losses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Path | list[dict[str, Any]],
    *,
    max_length: int = 1024,
    batch_size: int = 8,
    max_per_task: int | None = None,
    default_task: str = "default",
) -> dict[str, float]:
    """``{task: mean loss}`` over examples (a prepared JSONL file or its rows), grouped by ``meta.task``."""
    import torch

    rows = read_jsonl(examples) if isinstance(examples, Path) else examples
    seen: dict[str, int] = defaultdict(int)
    items: list[tuple[str, dict[str, list[int]]]] = []
    for row in rows:
        task = (row.get("meta") or {}).get("task") or default_task
        if max_per_task is not None and seen[task] >= max_per_task:
            continue
        seen[task] += 1
        items.append((task, tokenize_conversation(tokenizer, row["messages"], max_length=max_length)))
    # Longest first keeps padding small within a batch.
    items.sort(key=lambda it: len(it[1]["input_ids"]), reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                width = max(len(x["input_ids"]) for _, x in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, (_, x) in enumerate(chunk):
                    n = len(x["input_ids"])
                    ids[i, :n] = torch.tensor(x["input_ids"])
                    labels[i, :n] = torch.tensor(x["labels"])
                    mask[i, :n] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                shift_logits = logits[:, :-1]
                shift_labels = labels[:, 1:].to(device)
                per_token = torch.nn.functional.cross_entropy(
                    shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                    ignore_index=IGNORE_INDEX, reduction="none",
                ).view(shift_labels.shape)
                valid = shift_labels != IGNORE_INDEX
                for i, (task, _) in enumerate(chunk):
                    sums[task] += float(per_token[i][valid[i]].sum())
                    counts[task] += int(valid[i].sum())
    finally:
        if was_training:
            model.train()
    return {t: sums[t] / counts[t] for t in sorted(counts) if counts[t] > 0}
