"""POST /v1/chat/completions and /v1/completions: validate, tokenize, check the caps, then answer.

Everything a request can get wrong is refused here with a 4xx naming the field, before any row reaches
the engine: unknown model (404), unsupported features, n, stop sequences, max_tokens, prompt count,
prompt length (``serve.max_prompt_tokens``), the model's context, and requests needing more rows
(n x prompts) than the server ever holds at once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from tuneforge.serve import relay
from tuneforge.serve.errors import ApiError
from tuneforge.serve.schemas import ChatCompletionRequest, CompletionRequest, _Body
from tuneforge.serve.state import ServeState, State, require_key

router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           state: State) -> Any:
    from tuneforge.models.generate import chat_inputs

    adapter = state.adapter_for(body.model)
    requested = body.max_completion_tokens or body.max_tokens
    max_tokens, stop = check_common(state, body, requested, prompts=1)
    messages = []
    for i, m in enumerate(body.messages):
        messages.append({"role": "system" if m.role == "developer" else m.role,
                         "content": valid_text(m.text(), f"messages.{i}.content")})
    try:
        ids = chat_inputs(state.engine.tokenizer, messages)["input_ids"][0].tolist()
    except Exception as exc:  # a template may refuse some role orders; its message says which
        raise ApiError(400, f"messages cannot be formatted with the model's chat template: {exc}",
                       "invalid_messages", "messages") from None
    max_tokens = fit_context(state, ids, max_tokens, requested is not None, "messages")
    job = relay.new_job(request, state, body, chat=True)
    relay.make_rows(job, [ids], adapter, max_tokens, stop)
    return await relay.answer(request, state, job)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, state: State) -> Any:
    adapter = state.adapter_for(body.model)
    prompts = body.prompts()
    if not prompts or len(prompts) > state.cfg.max_prompts:
        raise ApiError(400, f"give 1 to {state.cfg.max_prompts} prompts", "bad_prompt_count", "prompt")
    max_tokens, stop = check_common(state, body, body.max_tokens, prompts=len(prompts))
    ids = [state.engine.tokenizer(valid_text(p, "prompt"))["input_ids"] for p in prompts]
    max_tokens = min(fit_context(state, p, max_tokens, True, "prompt") for p in ids)
    job = relay.new_job(request, state, body, chat=False)
    relay.make_rows(job, ids, adapter, max_tokens, stop)
    return await relay.answer(request, state, job)


def check_common(state: ServeState, body: _Body, requested_max: int | None, prompts: int) -> tuple[int, list[str]]:
    """The caps both routes share; returns (max_tokens, stop sequences)."""
    cfg = state.cfg
    feature = body.unsupported()
    if feature:
        raise ApiError(400, f"{feature} is not supported by this server", "unsupported_parameter", feature)
    if body.n > cfg.max_n:
        raise ApiError(400, f"n={body.n} is above the server's limit of {cfg.max_n}", "n_too_large", "n")
    rows, capacity = body.n * prompts, state.engine.capacity
    if rows > capacity:  # it could never be admitted: a 429 would have the client retry forever
        raise ApiError(400, f"this request needs {rows} rows (n x prompts) and the server holds at most {capacity} "
                       "at once (serve.max_concurrent + serve.max_queue); send fewer", "too_many_rows", "n")
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


def valid_text(text: str, param: str) -> str:
    """JSON may carry lone surrogates (\\ud800), which no tokenizer (or UTF-8 encoder) accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{param} is not valid Unicode text (it holds a lone surrogate such as \\ud800)",
                       "invalid_text", param) from None
    return text


def fit_context(state: ServeState, prompt_ids: list[int], max_tokens: int, explicit: bool, param: str) -> int:
    """Refuse empty or over-long prompts; returns max_tokens shrunk to the room left in the context."""
    if not prompt_ids:
        raise ApiError(400, "the prompt is empty", "empty_prompt", param)
    cap = state.cfg.max_prompt_tokens
    if len(prompt_ids) > cap:
        raise ApiError(400, f"the prompt is {len(prompt_ids)} tokens; the server's limit is {cap} "
                       "(serve.max_prompt_tokens)", "prompt_too_long", param)
    limit = getattr(state.engine.model.config, "max_position_embeddings", None) or 1 << 30
    room = limit - len(prompt_ids)
    if room < 1 or (explicit and max_tokens > room):
        raise ApiError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the "
                       f"model's context of {limit} tokens", "context_length_exceeded", "max_tokens")
    return min(max_tokens, room)
