"""Admission counts rows (n x prompts), not requests; the engine's queue is bounded; prompts are capped."""

from __future__ import annotations

import asyncio

import pytest

from tests.serve.asgi import exchange, run
from tests.serve.conftest import build_started


@pytest.fixture(scope="module")
def three_rows(tiny_model_dir):
    """Two rows generated at once plus one waiting: the server holds three rows at most."""
    served = build_started(tiny_model_dir, max_concurrent=2, max_queue=1, max_tokens=1500, max_prompt_tokens=40)
    yield served
    served.engine.stop(5)


def completion(n: int = 1, prompts: int = 1, max_tokens: int = 2, **extra) -> dict:
    prompt = ["Once upon a time"] * prompts if prompts > 1 else "Once upon a time"
    return {"model": "tiny", "prompt": prompt, "n": n, "max_tokens": max_tokens, "temperature": 0, **extra}


def test_rows_not_requests_are_admitted(three_rows):
    app, engine = three_rows.app, three_rows.engine

    async def scenario() -> tuple[int, int, int]:
        leave = asyncio.Event()
        rows = engine.stats["rows"]
        long = asyncio.ensure_future(exchange(app, "/v1/completions", completion(n=2, max_tokens=1500, stream=True),
                                              gone=leave))
        for _ in range(3000):  # bounded: until the engine generates the long request's two rows
            if engine.stats["rows"] >= rows + 2:
                break
            await asyncio.sleep(0.01)
        two_more = await exchange(app, "/v1/completions", completion(n=2))  # 2 + 2 > 3 rows
        one_more = asyncio.ensure_future(exchange(app, "/v1/completions", completion(n=1)))  # 2 + 1 fits
        for _ in range(500):  # bounded: until it waits in the queue behind the long request
            if engine.in_flight == 3 or one_more.done():
                break
            await asyncio.sleep(0.01)
        leave.set()
        await long
        return two_more.status, (await one_more).status, engine.in_flight

    two_more, one_more, in_flight = run(scenario())
    assert two_more == 429  # one request, but two rows: more than the one free
    assert one_more == 200
    assert in_flight == 0


def test_a_request_that_could_never_fit_gets_400_not_429(three_rows):
    r = run(exchange(three_rows.app, "/v1/completions", completion(n=2, prompts=2)))  # 4 rows > 3
    assert r.status == 400
    message = r.json()["error"]["message"]
    assert "4 rows" in message and "serve.max_queue" in message


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_prompt_longer_than_max_prompt_tokens_gets_400(three_rows, path):
    long_text = "word " * 200  # ~200 tokens > 40
    body = ({"model": "tiny", "messages": [{"role": "user", "content": long_text}], "max_tokens": 2}
            if "chat" in path else completion(prompt=long_text))
    r = run(exchange(three_rows.app, path, body))
    assert r.status == 400
    error = r.json()["error"]
    assert "serve.max_prompt_tokens" in error["message"] and error["code"] == "prompt_too_long"
    short = run(exchange(three_rows.app, path, {**body, "messages": [{"role": "user", "content": "hi"}]}
                         if "chat" in path else completion()))
    assert short.status == 200


def test_the_engine_queue_is_bounded_and_cancelled_rows_leave_it(tiny_model, tokenizer):
    from tuneforge.serve.engine import Engine, EngineBusy, Row

    engine = Engine(tiny_model, tokenizer, max_batch=2, max_waiting=1)  # not started: rows stay queued

    def rows(k: int) -> list[Row]:
        return [Row(prompt_ids=[1, 2], adapter=None, max_tokens=4, emit=lambda *_: None) for _ in range(k)]

    first = rows(3)
    engine.submit(first)
    with pytest.raises(EngineBusy):
        engine.submit(rows(1))
    assert engine.in_flight == 3
    engine.cancel(first[:2])  # their clients left: the room is free again, and they are not generated
    assert engine.in_flight == 1 and engine.stats["rows_dropped"] == 2
    engine.submit(rows(2))
    with pytest.raises(EngineBusy):
        engine.submit(rows(1))
