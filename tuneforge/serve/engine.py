"""The generation engine: one base model in memory, adapters loaded lazily, concurrent requests batched.

A single worker thread owns the model (PyTorch modules are not safe to switch adapters under concurrent
use). It takes every row waiting in the queue (up to ``max_batch``, after a short window so that
requests arriving together share a batch), groups them by adapter, and decodes each group as one
left-padded batch with a KV cache: one forward pass per step for the whole group, each row with its
own sampling settings, stop sequences, token cap and deadline. Finished rows leave the batch (their
cache rows are dropped) so long answers do not slow short ones down. Every token's text is pushed to
the row's ``emit`` callback as soon as it is safe to send (see ``textstream``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.serve.textstream import TextStream

log = logging.getLogger(__name__)

BASE = None  # adapter key for "no adapter"


@dataclass
class Row:
    """One sequence to generate. ``emit(kind, payload)`` is called from the worker thread:
    ("delta", text), then exactly one of ("done", {"finish_reason", "prompt_tokens", "completion_tokens"})
    or ("error", message)."""

    prompt_ids: list[int]
    adapter: str | None
    max_tokens: int
    emit: Callable[[str, Any], None]
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    deadline: float = float("inf")
    cancelled: threading.Event = field(default_factory=threading.Event)


class Engine:
    def __init__(
        self, model, tokenizer, adapters: dict[str, Path] | None = None, *,
        max_batch: int = 8, batch_window_s: float = 0.01,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.adapters = dict(adapters or {})
        self.loaded: set[str] = set()
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self.queue: queue.Queue[Row] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.eos_ids = frozenset(self._eos_ids())
        self.stats = {"batches": 0, "rows": 0, "max_rows_in_batch": 0}

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        for value in (eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return ids

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tuneforge-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the rows already queued, then stop the worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, row: Row) -> None:
        self.queue.put(row)

    # -- worker ----------------------------------------------------------------------------------

    def _take_batch(self) -> list[Row]:
        try:
            first = self.queue.get(timeout=0.05)
        except queue.Empty:
            return []
        rows = [first]
        end = time.monotonic() + self.batch_window_s
        while len(rows) < self.max_batch:
            left = end - time.monotonic()
            try:
                rows.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return rows

    def _loop(self) -> None:
        while not (self._stop.is_set() and self.queue.empty()):
            rows = self._take_batch()
            groups: dict[str | None, list[Row]] = {}
            for row in rows:
                groups.setdefault(row.adapter, []).append(row)
            for adapter, group in groups.items():
                try:
                    self._generate(adapter, group)
                except Exception as exc:  # a failed batch must not kill the server
                    log.exception("generation failed")
                    for row in group:
                        row.emit("error", f"generation failed: {type(exc).__name__}: {exc}")

    def _use_adapter(self, name: str | None):
        """Make ``name`` active (loading it on first use); returns a context manager for the forward."""
        import contextlib

        from peft import PeftModel

        if name is BASE:
            if isinstance(self.model, PeftModel):
                return self.model.disable_adapter()
            return contextlib.nullcontext()
        if name not in self.loaded:
            path = str(self.adapters[name])
            log.info("loading adapter %s from %s", name, path)
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.model.eval()
            self.loaded.add(name)
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def _generate(self, adapter: str | None, rows: list[Row]) -> None:
        import torch

        rows = [r for r in rows if not r.cancelled.is_set()]
        if not rows:
            return
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        self.stats["max_rows_in_batch"] = max(self.stats["max_rows_in_batch"], len(rows))
        ctx = self._use_adapter(adapter)
        device = self.model.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        streams = [TextStream(self.tokenizer, r.stop, r.max_tokens, self.eos_ids) for r in rows]
        generators = []
        for r in rows:
            g = torch.Generator(device="cpu")
            g.manual_seed(r.seed if r.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
            generators.append(g)
        active = list(range(len(rows)))  # indices into rows, aligned with the batch dimension
        cache = None
        with ctx, torch.inference_mode():
            while active:
                out = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions,
                    cache=cache, use_cache=True, logits_to_keep=1,  # only the last position's logits
                )
                cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
                logits = out.logits[:, -1, :].float().cpu()
                keep: list[int] = []
                next_tokens: list[int] = []
                now = time.monotonic()
                for b, i in enumerate(active):
                    row, stream = rows[i], streams[i]
                    if row.cancelled.is_set():
                        continue
                    if now > row.deadline:
                        row.emit("error", "timeout")
                        continue
                    token = _pick(logits[b], row.temperature, row.top_p, generators[i])
                    piece = stream.push(token)
                    if piece:
                        row.emit("delta", piece)
                    if stream.finish_reason is not None:
                        row.emit("done", {
                            "finish_reason": stream.finish_reason, "prompt_tokens": len(row.prompt_ids),
                            "completion_tokens": len(stream.ids) + (1 if stream.finish_reason == "stop" and
                                                                    token in self.eos_ids else 0),
                        })
                        continue
                    keep.append(b)
                    next_tokens.append(token)
                if not keep:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    cache.reorder_cache(index)
                    mask, positions = mask[index], positions[index]
                    active = [active[b] for b in keep]
                ids = torch.tensor(next_tokens, device=device)[:, None]
                mask = torch.cat([mask, torch.ones_like(ids)], dim=-1)
                positions = positions[:, -1:] + 1


def _pick(logits, temperature: float, top_p: float, generator) -> int:
    """Greedy at temperature 0, else nucleus sampling with the row's own generator (reproducible by seed)."""
    import torch

    if temperature < 1e-4:  # below this, sampling is greedy anyway (and tiny values overflow to NaN)
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        cut = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs[cut] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
