"""The generation engine: one base model in memory, adapters loaded lazily, concurrent requests batched.

A single worker thread owns the model (PyTorch modules are not safe to switch adapters under concurrent
use). It takes every row waiting in the queue (up to ``max_batch``, after a short window so that
requests arriving together share a batch), groups them by adapter, and decodes each group as one
left-padded batch with a KV cache: one forward pass per step for the whole group, each row with its
own sampling settings, stop sequences, token cap and deadline. Finished rows leave the batch (their
cache rows are dropped) so long answers do not slow short ones down. Every token's text is pushed to
the row's ``emit`` callback as soon as it is safe to send (see ``textstream``).

The engine also owns admission: it holds at most ``max_batch + max_waiting`` live rows (queued or being
generated), so the HTTP layer's 429 and the engine's queue are one bound, counted in rows. A request
whose client has gone cancels its rows (:meth:`Engine.cancel`): queued ones leave the queue at once,
running ones at the next decoding step, and either way their capacity is free immediately.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.serve.textstream import TextStream

log = logging.getLogger(__name__)

BASE = None  # adapter key for "no adapter"


@dataclass(eq=False)  # rows are compared (and removed from the queue) by identity
class Row:
    """One sequence to generate. ``emit(kind, payload)`` is called from the worker thread:
    ("delta", text), then exactly one of ("done", {"finish_reason", "prompt_tokens", "completion_tokens"})
    or ("error", reason) with reason "timeout", "failed" (logged with ``request_id``) or "stopped" (the
    worker thread is gone). A cancelled row gets no further events."""

    prompt_ids: list[int]
    adapter: str | None
    max_tokens: int
    emit: Callable[[str, Any], None]
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    deadline: float = float("inf")
    request_id: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    state: str = field(default="new", init=False)  # new -> queued -> running -> finished | cancelled


class EngineBusy(Exception):
    """No room for the rows now (the HTTP layer answers 429)."""

    def __init__(self, free: int, capacity: int) -> None:
        super().__init__(f"{free} of {capacity} rows free")
        self.free, self.capacity = free, capacity


class EngineStopped(Exception):
    """The worker thread is stopping or has died (the HTTP layer answers 503)."""


class Engine:
    def __init__(
        self, model, tokenizer, adapters: dict[str, Path] | None = None, *,
        max_batch: int = 8, max_waiting: int = 32, batch_window_s: float = 0.01,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.adapters = dict(adapters or {})
        self.loaded: set[str] = set()
        self.max_batch = max_batch
        self.capacity = max_batch + max_waiting  # live rows (queued or generating) at most
        self.batch_window_s = batch_window_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # notified when rows are queued or stop is asked
        self._queue: deque[Row] = deque()
        self._running: list[Row] = []  # rows taken by the worker and not finished yet
        self._live = 0  # rows submitted and neither finished nor cancelled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.eos_ids = frozenset(self._eos_ids())
        # rows: generated (taken into a batch); rows_dropped: stopped unfinished because their client left
        self.stats = {"batches": 0, "rows": 0, "max_rows_in_batch": 0, "rows_dropped": 0}

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
        self._thread = threading.Thread(target=self._run, name="tuneforge-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the rows already queued, then stop the worker."""
        with self._lock:
            self._stop.set()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        """Whether the worker thread is running (False before start, after stop, or if it died)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def in_flight(self) -> int:
        """Rows queued or being generated, cancelled ones excluded."""
        return self._live

    # -- admission -------------------------------------------------------------------------------

    def submit(self, rows: list[Row]) -> None:
        """Queue all of a request's rows, or none: EngineBusy when they would pass ``capacity``."""
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and not self._thread.is_alive()):
                raise EngineStopped("the generation engine is not running")
            if self._live + len(rows) > self.capacity:
                raise EngineBusy(self.capacity - self._live, self.capacity)
            for row in rows:
                row.state = "queued"
                self._queue.append(row)
            self._live += len(rows)
            self._wake.notify()

    def cancel(self, rows: Iterable[Row]) -> None:
        """The client is gone: stop these rows (queued ones leave the queue now). Safe to repeat."""
        with self._lock:
            for row in rows:
                row.cancelled.set()
                if row.state not in ("queued", "running"):
                    continue
                if row.state == "queued":
                    self._queue.remove(row)
                    self.stats["rows_dropped"] += 1
                # a running row is dropped (and counted) by the worker at its next step
                row.state = "cancelled"
                self._live -= 1

    def _finish(self, row: Row, kind: str, payload: Any) -> None:
        """Send a row's last event and give its capacity back (unless it was cancelled meanwhile)."""
        with self._lock:
            if row.state not in ("queued", "running"):
                return
            row.state = "finished"
            self._live -= 1
        row.emit(kind, payload)

    def _count_dropped(self, n: int) -> None:
        if n:
            with self._lock:  # cancel() counts too, from the event loop's thread
                self.stats["rows_dropped"] += n

    # -- worker ----------------------------------------------------------------------------------

    def _take_batch(self) -> list[Row]:
        """Up to ``max_batch`` queued rows, waiting ``batch_window_s`` after the first for more to join."""
        with self._lock:
            if not self._queue:
                self._wake.wait(0.05)
            if not self._queue:
                return []
            end = time.monotonic() + self.batch_window_s
            while len(self._queue) < self.max_batch and (left := end - time.monotonic()) > 0:
                self._wake.wait(left)
            rows = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            for row in rows:
                row.state = "running"
            self._running = list(rows)
            return rows

    def _run(self) -> None:
        """The worker thread. If it dies, every live row gets an error rather than hanging to its timeout."""
        try:
            self._loop()
        except BaseException:  # logged here rather than re-raised: the thread ends either way
            log.critical("the generation thread died; /health now reports unhealthy", exc_info=True)
        finally:
            with self._lock:
                left = [*self._running, *self._queue]
                self._queue.clear()
            for row in left:
                self._finish(row, "error", "stopped")

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._stop.is_set() and not self._queue:
                    return
            rows = self._take_batch()
            groups: dict[str | None, list[Row]] = {}
            for row in rows:
                groups.setdefault(row.adapter, []).append(row)
            for adapter, group in groups.items():
                try:
                    self._generate(adapter, group)
                except Exception:  # a failed batch must not kill the server
                    ids = ", ".join(sorted({r.request_id for r in group if r.request_id})) or "-"
                    log.exception("generation failed (requests %s)", ids)
                    for row in group:
                        self._finish(row, "error", "failed")
            self._running = []

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

        live = [r for r in rows if not r.cancelled.is_set()]
        self._count_dropped(len(rows) - len(live))
        rows = live
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
                        self._count_dropped(1)
                        continue
                    if now > row.deadline:
                        self._finish(row, "error", "timeout")
                        continue
                    token = _pick(logits[b], row.temperature, row.top_p, generators[i])
                    piece = stream.push(token)
                    if piece:
                        row.emit("delta", piece)
                    if stream.finish_reason is not None:
                        self._finish(row, "done", {
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
