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
from tuneforge.strategies.mixture import read_jsonl
from tuneforge.train.data import TokenizedExample
from tuneforge.train.packing import collate, task_names
from tuneforge.train.steps import loss_sum_by_task

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
    """``{task: mean loss}`` over examples (a prepared JSONL file or its rows), grouped by ``meta.task``.

    The same tagged batches and per-task loss as training (``collate`` + ``loss_sum_by_task``), one
    example per row.
    """
    import torch

    rows = read_jsonl(examples) if isinstance(examples, Path) else examples
    seen: dict[str, int] = defaultdict(int)
    items: list[TokenizedExample] = []
    for row in rows:
        task = (row.get("meta") or {}).get("task") or default_task
        if max_per_task is not None and seen[task] >= max_per_task:
            continue
        seen[task] += 1
        enc = tokenize_conversation(tokenizer, row["messages"], max_length=max_length)
        items.append(TokenizedExample(enc["input_ids"], [*enc["labels"][1:], IGNORE_INDEX], task=str(task)))
    # Longest first keeps padding small within a batch.
    items.sort(key=len, reverse=True)
    tasks = task_names(items)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    totals = torch.zeros(len(tasks), 2, dtype=torch.float64)
    peft_cfg = getattr(model, "active_peft_config", None)  # prompt/prefix tuning: virtual tokens, padding mask
    prompt_learning = bool(peft_cfg is not None and peft_cfg.is_prompt_learning)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                batch = collate(items, [[i] for i in range(start, min(start + batch_size, len(items)))], pad, tasks)
                if batch.n_target:
                    totals += loss_sum_by_task(model, batch, len(tasks), prompt_learning)[1].cpu()
    finally:
        if was_training:
            model.train()
    return {t: float(totals[k, 0] / totals[k, 1]) for k, t in enumerate(tasks) if totals[k, 1] > 0}
