"""A request's rows as the engine and its scheduler see them: what to generate and whom to tell."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BASE = None  # adapter key for "no adapter"
MIXED_BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


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
