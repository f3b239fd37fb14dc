"""The HTTP API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` and ``/health``.

The request's ``model`` picks the base model or one of the adapters. Handlers validate and tokenize,
check the caps, hand rows to the :class:`~tuneforge.serve.engine.Engine` and relay its text as JSON or
as server-sent events (the OpenAI chunk format). Every error is a 4xx/5xx in the OpenAI error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.serve.engine import BASE, Engine, Row
from tuneforge.serve.schemas import ChatCompletionRequest, CompletionRequest, _Body
from tuneforge.serve.security import BodyLimit, error_body, key_matches

if TYPE_CHECKING:
    from tuneforge.config.serve import ServeConfig


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def create_app(engine: Engine, cfg: ServeConfig, base_id: str, api_key: str | None) -> FastAPI:
    """Build the app around a started-or-not engine (the lifespan starts and drains it)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        # uvicorn runs this after in-flight requests finished (or shutdown_timeout_s passed).
        await asyncio.to_thread(engine.stop, cfg.shutdown_timeout_s)

    # No /docs or /openapi.json routes: every route but /health is behind the key.
    app = FastAPI(title="tuneforge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    app.state.inflight = 0
    model_ids = [base_id, *engine.adapters]

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.message, kind, exc.code, exc.param), exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
            problems.append(f"{where}: {e['msg']}")
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        param = ".".join(str(p) for p in first if p != "body") or None
        return JSONResponse(error_body("invalid request: " + "; ".join(problems), "invalid_request_error",
                                       "invalid_request", param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), exc.status_code)

    def require_key(request: Request) -> None:
        if api_key is not None and not key_matches(request.headers.get("authorization"), api_key):
            raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", "invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def models() -> dict[str, Any]:
        now = int(time.time())
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": now, "owned_by": "tuneforge"} for m in model_ids
        ]}

    def adapter_for(model: str) -> str | None:
        if model == base_id:
            return BASE
        if model in engine.adapters:
            return model
        raise ApiError(404, f"model {model!r} not found; available: {', '.join(model_ids)}", "model_not_found", "model")

    def check_common(body: _Body, requested_max: int | None) -> tuple[int, list[str]]:
        feature = body.unsupported()
        if feature:
            raise ApiError(400, f"{feature} is not supported by this server", "unsupported_parameter", feature)
        if body.n > cfg.max_n:
            raise ApiError(400, f"n={body.n} is above the server's limit of {cfg.max_n}", "n_too_large", "n")
        stop = body.stop_list()
        if len(stop) > cfg.max_stop:
            raise ApiError(400, f"{len(stop)} stop sequences; the limit is {cfg.max_stop}", "too_many_stop", "stop")
        if any(not s or len(s) > cfg.max_stop_chars for s in stop):
            raise ApiError(400, f"each stop sequence must be 1 to {cfg.max_stop_chars} characters", "bad_stop", "stop")
        max_tokens = requested_max if requested_max is not None else cfg.max_tokens
        if max_tokens > cfg.max_tokens:
            raise ApiError(400, f"max_tokens={max_tokens} is above the server's limit of {cfg.max_tokens}",
                           "max_tokens_too_large", "max_tokens")
        return max_tokens, stop

    def fit_context(prompt_ids: list[int], max_tokens: int, explicit: bool) -> int:
        if not prompt_ids:
            raise ApiError(400, "the prompt is empty", "empty_prompt", "prompt")
        limit = getattr(engine.model.config, "max_position_embeddings", None) or 1 << 30
        room = limit - len(prompt_ids)
        if room < 1 or (explicit and max_tokens > room):
            raise ApiError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the "
                           f"model's context of {limit} tokens", "context_length_exceeded", "max_tokens")
        return min(max_tokens, room)

    def admit(rows_needed: int) -> None:
        if app.state.inflight >= cfg.max_concurrent + cfg.max_queue:
            raise ApiError(429, "server busy: too many requests in flight; retry shortly", "rate_limit_exceeded")
        app.state.inflight += 1

    def make_rows(prompts: list[list[int]], body: _Body, adapter: str | None, max_tokens: int,
                  stop: list[str], events: asyncio.Queue) -> list[Row]:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + cfg.request_timeout_s
        rows = []
        for p_index, ids in enumerate(prompts):
            for k in range(body.n):
                index = p_index * body.n + k

                def emit(kind: str, payload: Any, index: int = index) -> None:
                    with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                        loop.call_soon_threadsafe(events.put_nowait, (index, kind, payload))

                rows.append(Row(
                    prompt_ids=ids, adapter=adapter, max_tokens=max_tokens, emit=emit,
                    temperature=body.temperature, top_p=body.top_p, stop=stop,
                    seed=None if body.seed is None else body.seed + index, deadline=deadline,
                ))
        return rows

    async def relay(rows: list[Row], events: asyncio.Queue) -> AsyncIterator[tuple[int, str, Any]]:
        """Yield engine events until every row is done; raise ApiError on timeout or engine failure."""
        pending = len(rows)
        end = time.monotonic() + cfg.request_timeout_s + 5  # the engine's deadline fires first
        while pending:
            try:
                index, kind, payload = await asyncio.wait_for(events.get(), max(0.0, end - time.monotonic()))
            except TimeoutError:
                raise ApiError(504, f"request timed out after {cfg.request_timeout_s:g}s", "timeout") from None
            if kind == "error":
                if payload == "timeout":
                    raise ApiError(504, f"request timed out after {cfg.request_timeout_s:g}s (serve.request_timeout_s)",
                                   "timeout")
                raise ApiError(500, payload, "generation_failed")
            if kind == "done":
                pending -= 1
            yield index, kind, payload

    async def run(body: _Body, prompts: list[list[int]], adapter: str | None, max_tokens: int,
                  stop: list[str], chat: bool) -> Any:
        events: asyncio.Queue = asyncio.Queue()
        rows = make_rows(prompts, body, adapter, max_tokens, stop, events)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        for row in rows:
            engine.submit(row)
        if body.stream:
            return StreamingResponse(
                sse(rows, events, body, rid, created, chat), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            texts = [""] * len(rows)
            usage = {"prompt_tokens": 0, "completion_tokens": 0}
            finish: list[str | None] = [None] * len(rows)
            async for index, kind, payload in relay(rows, events):
                if kind == "delta":
                    texts[index] += payload
                else:
                    finish[index] = payload["finish_reason"]
                    usage["completion_tokens"] += payload["completion_tokens"]
            usage["prompt_tokens"] = sum(len(r.prompt_ids) for r in rows)
        finally:
            for row in rows:
                row.cancelled.set()
            app.state.inflight -= 1
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                        "logprobs": None} for i, (t, f) in enumerate(zip(texts, finish, strict=True))]
            return {"id": rid, "object": "chat.completion", "created": created, "model": body.model,
                    "choices": choices, "usage": usage}
        choices = [{"index": i, "text": t, "finish_reason": f, "logprobs": None}
                   for i, (t, f) in enumerate(zip(texts, finish, strict=True))]
        return {"id": rid, "object": "text_completion", "created": created, "model": body.model,
                "choices": choices, "usage": usage}

    async def sse(rows: list[Row], events: asyncio.Queue, body: _Body, rid: str, created: int,
                  chat: bool) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list[dict], usage: dict | None = None) -> bytes:
            data: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": body.model,
                                    "choices": choices}
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
                yield chunk([choice(i, None, None, first=True) for i in range(len(rows))])
            async for index, kind, payload in relay(rows, events):
                if kind == "delta":
                    yield chunk([choice(index, payload, None)])
                else:
                    completion_tokens += payload["completion_tokens"]
                    yield chunk([choice(index, None, payload["finish_reason"])])
            if (body.stream_options or {}).get("include_usage"):
                prompt_tokens = sum(len(r.prompt_ids) for r in rows)
                yield chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens})
            yield b"data: [DONE]\n\n"
        except ApiError as exc:  # headers are sent: report in-band, as OpenAI does
            yield f"data: {json.dumps(error_body(exc.message, 'server_error', exc.code))}\n\n".encode()
        finally:  # also runs when the client disconnects: stop generating for it
            for row in rows:
                row.cancelled.set()
            app.state.inflight -= 1

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        from tuneforge.models.generate import chat_inputs

        adapter = adapter_for(body.model)
        requested = body.max_completion_tokens or body.max_tokens
        max_tokens, stop = check_common(body, requested)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        try:
            ids = chat_inputs(engine.tokenizer, messages)["input_ids"][0].tolist()
        except Exception as exc:  # a template may refuse some role orders
            raise ApiError(400, f"messages cannot be formatted with the model's chat template: {exc}",
                           "invalid_messages", "messages") from None
        max_tokens = fit_context(ids, max_tokens, requested is not None)
        admit(body.n)
        return await run(body, [ids], adapter, max_tokens, stop, chat=True)

    @app.post("/v1/completions", dependencies=[Depends(require_key)])
    async def completions(body: CompletionRequest) -> Any:
        adapter = adapter_for(body.model)
        prompts = body.prompts()
        if not prompts or len(prompts) > cfg.max_prompts:
            raise ApiError(400, f"give 1 to {cfg.max_prompts} prompts", "bad_prompt_count", "prompt")
        max_tokens, stop = check_common(body, body.max_tokens)
        ids = [engine.tokenizer(p)["input_ids"] for p in prompts]
        max_tokens = min(fit_context(p, max_tokens, True) for p in ids)
        admit(body.n * len(prompts))
        return await run(body, ids, adapter, max_tokens, stop, chat=False)

    return app
