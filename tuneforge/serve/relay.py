"""Run a request's rows through the engine and answer: one JSON body, or server-sent events.

Capacity is counted by the engine in rows and given back on every way out of a request: the answer is
complete, an error, a timeout, or the client hangs up. A JSON answer watches for the hang-up while it
waits; a stream gives its rows back in the response's own ``finally``, which runs even when the stream
is cancelled before its generator produced a first chunk (the generator's ``finally`` would not run
then, and the rows would keep their capacity and generate for nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from tuneforge.serve.engine import EngineBusy, EngineStopped, Row
from tuneforge.serve.errors import ApiError, error_body, request_id
from tuneforge.serve.schemas import _Body
from tuneforge.serve.state import ServeState

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's status for "the client went away first"; nobody receives it


@dataclass
class Job:
    """One request's rows, the queue their engine events arrive on, and what the answer echoes."""

    body: _Body
    chat: bool
    request_id: str
    timeout_s: float
    rows: list[Row] = field(default_factory=list)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    completion_id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.completion_id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]

    @property
    def prompt_tokens(self) -> int:
        return sum(len(r.prompt_ids) for r in self.rows)


def new_job(request: Request, state: ServeState, body: _Body, chat: bool) -> Job:
    return Job(body=body, chat=chat, request_id=request_id(request), timeout_s=state.cfg.request_timeout_s)


def make_rows(job: Job, prompts: list[list[int]], adapter: str | None, max_tokens: int, stop: list[str]) -> None:
    """``n`` rows per prompt; each pushes its engine events onto the job's queue (thread-safe)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + job.timeout_s
    body = job.body
    for p_index, ids in enumerate(prompts):
        for k in range(body.n):
            index = p_index * body.n + k

            def emit(kind: str, payload: Any, index: int = index) -> None:
                with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                    loop.call_soon_threadsafe(job.events.put_nowait, (index, kind, payload))

            job.rows.append(Row(
                prompt_ids=ids, adapter=adapter, max_tokens=max_tokens, emit=emit,
                temperature=body.temperature, top_p=body.top_p, stop=stop,
                seed=None if body.seed is None else body.seed + index, deadline=deadline,
                request_id=job.request_id,
            ))


def submit(state: ServeState, job: Job) -> None:
    try:
        state.engine.submit(job.rows)
    except EngineBusy as busy:
        raise ApiError(429, f"server busy: this request needs {len(job.rows)} rows and {busy.free} of the "
                       f"server's {busy.capacity} are free (serve.max_concurrent + serve.max_queue); retry shortly",
                       "rate_limit_exceeded") from None
    except EngineStopped:
        raise ApiError(503, "the generation engine is not running; the server needs a restart",
                       "engine_stopped") from None


async def relay(job: Job) -> AsyncIterator[tuple[int, str, Any]]:
    """Yield engine events until every row is done; raise ApiError on timeout or engine failure."""
    pending = len(job.rows)
    end = time.monotonic() + job.timeout_s + 5  # the engine's deadline fires first
    while pending:
        try:
            index, kind, payload = await asyncio.wait_for(job.events.get(), max(0.0, end - time.monotonic()))
        except TimeoutError:
            raise ApiError(504, f"request timed out after {job.timeout_s:g}s (serve.request_timeout_s)",
                           "timeout") from None
        if kind == "error":
            raise _engine_error(payload, job.timeout_s)
        if kind == "done":
            pending -= 1
        yield index, kind, payload


def _engine_error(reason: str, timeout_s: float) -> ApiError:
    if reason == "timeout":
        return ApiError(504, f"request timed out after {timeout_s:g}s (serve.request_timeout_s)", "timeout")
    if reason == "stopped":
        return ApiError(503, "the generation engine stopped; the server needs a restart", "engine_stopped")
    return ApiError(500, "generation failed", "generation_failed")  # the engine logged why


async def answer(request: Request, state: ServeState, job: Job) -> Any:
    """Submit the job's rows and answer as JSON or as a stream, freeing the rows however it ends."""
    submit(state, job)

    def release() -> None:
        state.engine.cancel(job.rows)  # no-op for rows that finished

    if job.body.stream:
        return EngineStream(sse(job), release)
    collect = asyncio.ensure_future(_collect(job))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        release()
        await _cancel(collect, gone)
    if collect.done() and not collect.cancelled():
        return collect.result()  # raises the ApiError, if any
    return Response(status_code=CLIENT_CLOSED)


async def _client_gone(request: Request) -> None:
    """Returns when the client hangs up (the body has been read: all that can still come is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _cancel(*tasks: asyncio.Future) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _collect(job: Job) -> dict[str, Any]:
    n = len(job.rows)
    texts, finish = [""] * n, [None] * n
    completion_tokens = 0
    async for index, kind, payload in relay(job):
        if kind == "delta":
            texts[index] += payload
        else:
            finish[index] = payload["finish_reason"]
            completion_tokens += payload["completion_tokens"]
    usage = {"prompt_tokens": job.prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": job.prompt_tokens + completion_tokens}
    if job.chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                    "logprobs": None} for i, (t, f) in enumerate(zip(texts, finish, strict=True))]
        obj = "chat.completion"
    else:
        choices = [{"index": i, "text": t, "finish_reason": f, "logprobs": None}
                   for i, (t, f) in enumerate(zip(texts, finish, strict=True))]
        obj = "text_completion"
    return {"id": job.completion_id, "object": obj, "created": job.created, "model": job.body.model,
            "choices": choices, "usage": usage}


class EngineStream(StreamingResponse):
    """Server-sent events that call ``release`` however the response ends, cancelled or not."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def sse(job: Job) -> AsyncIterator[bytes]:
    """The OpenAI chunk format: a role chunk (chat), one chunk per delta or finish, usage, [DONE]."""
    body, chat = job.body, job.chat
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict], usage: dict | None = None) -> bytes:
        data: dict[str, Any] = {"id": job.completion_id, "object": obj, "created": job.created,
                                "model": body.model, "choices": choices}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n".encode()

    def choice(i: int, text: str | None, finish: str | None, first: bool = False) -> dict:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            return {"index": i, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": i, "text": text or "", "finish_reason": finish, "logprobs": None}

    completion_tokens = 0
    try:
        if chat:
            yield chunk([choice(i, None, None, first=True) for i in range(len(job.rows))])
        async for index, kind, payload in relay(job):
            if kind == "delta":
                yield chunk([choice(index, payload, None)])
            else:
                completion_tokens += payload["completion_tokens"]
                yield chunk([choice(index, None, payload["finish_reason"])])
        if (body.stream_options or {}).get("include_usage"):
            yield chunk([], {"prompt_tokens": job.prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": job.prompt_tokens + completion_tokens})
        yield b"data: [DONE]\n\n"
    except ApiError as exc:  # headers are sent: report in-band, as OpenAI does
        log.error("request %s: %d %s: %s", job.request_id, exc.status, exc.code, exc.message)
        message = f"{exc.message} (request id {job.request_id})"
        yield f"data: {json.dumps(error_body(message, 'server_error', exc.code, request_id=job.request_id))}\n\n".encode()

