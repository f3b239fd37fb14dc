"""The generation engine: one base model in memory, adapters loaded lazily, concurrent requests batched.

A single worker thread owns the model (PyTorch modules are not safe to switch adapters under concurrent
use). It batches at the level of decoding steps, as vLLM and ORCA do (``scheduler``): a request that
arrives while others are being generated is prefilled and joins the running batch at the next step,
and a row that finishes leaves at once, its KV-cache slot reused without re-padding the others
(``kv_cache``). Each row keeps its own sampling settings, stop sequences, token cap and deadline;
rows of different LoRA adapters share a step. Every token's text is pushed to the row's ``emit``
callback as soon as it is safe to send (see ``textstream``). The model's large float32 Linear layers (and
all bfloat16 ones, where the CPU multiplies bfloat16 natively) are swapped in place for ones that multiply
from oneDNN's prepacked weights (``packed``: a float32 decoding step of 8 rows 1.2x quicker).

The engine also owns admission: it holds at most ``max_batch + max_waiting`` live rows (queued or being
generated), so the HTTP layer's 429 and the engine's queue are one bound, counted in rows. A request
whose client has gone cancels its rows (:meth:`Engine.cancel`): queued ones leave the queue at once,
running ones at the next decoding step, and either way their capacity is free immediately.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tuneforge.serve.rows import BASE, MIXED_BASE, Row
from tuneforge.serve.slot_attention import install as install_slot_attention

log = logging.getLogger(__name__)
BURST_WINDOWS = 4  # an idle engine waits for a burst at most this many batch windows after its first row
PACK = "by dtype"  # Engine(pack_weights=): packed.min_weights()' bound for each layer's dtype (and CPU)

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
        pack_weights: int | str | None = PACK,
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
        self._mixable_cache: dict[str, bool] = {}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # rows joining a running batch ride in its decoding step where the model's attention allows it
        self.mixed_steps = install_slot_attention(model)
        # Linear layers of at least ``pack_weights`` weights (PACK: a bound per dtype; None: none) run from
        # oneDNN's prepacked weights (``packed``) until an adapter that reads the base weights (DoRA) is loaded
        self.packed_linears = 0
        if pack_weights is not None:
            from tuneforge.serve.packed import min_weights, pack_linears

            self.packed_linears = pack_linears(model, min_weights() if pack_weights == PACK else int(pack_weights))
        # batches: prefill forwards; steps: decoding forwards; rows: generated (taken into the batch);
        # joined_running: rows that joined while others were decoding (joined_in_step: of those, the ones whose
        # prompt rode in the running rows' decoding step, one forward for both); rows_dropped: stopped unfinished
        # because their client left; prefix_tokens_reused: prompt tokens copied from a stored prefix, not computed
        self.stats = {"batches": 0, "steps": 0, "rows": 0, "max_rows_in_batch": 0, "rows_dropped": 0,
                      "joined_running": 0, "joined_in_step": 0, "prefix_tokens_reused": 0}

    def describe(self) -> str:
        """One line for the server's start: the weights' dtype, what is packed, and a hint where bfloat16
        would be quicker on this CPU."""
        import torch

        from tuneforge.models import native_bf16

        param = next(self.model.parameters())
        int8 = any(getattr(b, "dtype", None) == torch.int8 for b in self.model.buffers())  # tuneforge export --int8
        dtype = "int8 (float32 activations)" if int8 else str(param.dtype).removeprefix("torch.")
        line = f"weights {dtype} on {param.device.type}, {self.packed_linears} Linear layers prepacked (oneDNN)"
        if not int8 and param.dtype == torch.float32 and param.device.type == "cpu" and native_bf16():
            line += "; this CPU multiplies bfloat16 natively: --dtype bfloat16 serves batches quicker"
        return line

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

    def _take(self, running: int) -> list[Row]:
        """Queued rows for the free slots. Idle, it waits for a first row and then ``batch_window_s`` after the
        latest arrival (``BURST_WINDOWS`` windows at most), so that a burst is prefilled together; busy, it
        takes what is there, at once. (A window counted from the first row split bursts whose requests the
        HTTP layer hands over a few ms apart: the late ones waited for the first prefill, then joined.)"""
        with self._lock:
            if not running:
                if not self._queue:
                    self._wake.wait(0.05)
                first = time.monotonic()
                end, seen = first + self.batch_window_s, len(self._queue)
                while self._queue and len(self._queue) < self.max_batch and (left := end - time.monotonic()) > 0:
                    self._wake.wait(left)
                    if len(self._queue) > seen:  # still arriving: a window after this one
                        seen = len(self._queue)
                        end = min(time.monotonic() + self.batch_window_s, first + BURST_WINDOWS * self.batch_window_s)
            rows = [self._queue.popleft() for _ in range(min(self.max_batch - running, len(self._queue)))]
            for row in rows:
                row.state = "running"
            self._running.extend(rows)
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
        from tuneforge.serve.scheduler import Batch

        batch = Batch(self)
        while True:
            with self._lock:
                if self._stop.is_set() and not self._queue and not batch.live:
                    return
            new = self._take(len(batch.live))
            if not new and not batch.live:
                continue
            try:
                self._step(batch, new)
            except Exception:  # a failed step must not kill the server: its rows fail, the next ones run
                rows = [*batch.rows, *(r for r in new if r not in batch.rows)]
                ids = ", ".join(sorted({r.request_id for r in rows if r.request_id})) or "-"
                log.exception("generation failed (requests %s)", ids)
                for row in rows:
                    self._finish(row, "error", "failed")
                batch.reset()
            with self._lock:
                self._running = batch.rows

    def _step(self, batch, new: list[Row]) -> None:
        batch.step(new)

    # -- adapters --------------------------------------------------------------------------------

    def group_of(self, row: Row) -> str:
        """Rows with the same group share a forward: the base and plain-LoRA adapters all together."""
        from tuneforge.serve.scheduler import MIXED

        return MIXED if self._mixable(row.adapter) else str(row.adapter)

    def _mixable(self, name: str | None) -> bool:
        if name is BASE:
            return True
        if name not in self._mixable_cache:
            cfg = json.loads((Path(self.adapters[name]) / "adapter_config.json").read_text(encoding="utf-8"))
            self._mixable_cache[name] = (str(cfg.get("peft_type", "LORA")).upper() == "LORA"
                                         and not cfg.get("use_dora", False))
        return self._mixable_cache[name]

    def adapter_forward(self, names: list[str | None]) -> tuple[Any, dict[str, Any]]:
        """(context manager, extra forward kwargs) for a forward over rows of these adapters."""
        import contextlib

        from peft import PeftModel

        for name in set(names) - {BASE}:
            self._load_adapter(name)
        if len(set(names)) > 1:  # PEFT's mixed batch: one base matmul, each row's own LoRA delta
            return contextlib.nullcontext(), {"adapter_names": [MIXED_BASE if n is BASE else n for n in names]}
        if names[0] is BASE:
            if isinstance(self.model, PeftModel):
                return self.model.disable_adapter(), {}
            return contextlib.nullcontext(), {}
        self.model.set_adapter(names[0])
        return contextlib.nullcontext(), {}

    def _load_adapter(self, name: str) -> None:
        from peft import PeftModel

        if name in self.loaded:
            return
        path = str(self.adapters[name])
        if self.packed_linears and not self._mixable(name):
            from tuneforge.serve.packed import unpack_linears

            log.info("adapter %s reads the base weights: serving from plain (unpacked) weights from now on", name)
            unpack_linears(self.model)
            self.packed_linears = 0
        log.info("loading adapter %s from %s", name, path)
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(path, adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
        self.model.eval()
        self.loaded.add(name)
