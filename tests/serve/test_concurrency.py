"""Concurrent clients are batched together; limits (429, timeouts) and graceful shutdown hold."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.serve.conftest import API_KEY, start_server

PROMPTS = [f"Question {i}: what is {i} plus {i}?" for i in range(8)]


def ask(url: str, prompt: str, max_tokens: int = 8) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                       max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content


def test_eight_concurrent_clients_share_batches_and_get_their_own_answers(tiny_model_dir):
    running = start_server(tiny_model_dir, batch_window_ms=300)
    try:
        sequential = [ask(running.url, p) for p in PROMPTS]
        assert running.served.engine.stats["max_rows_in_batch"] == 1
        with ThreadPoolExecutor(8) as pool:
            concurrent = list(pool.map(lambda p: ask(running.url, p), PROMPTS))
        stats = running.served.engine.stats
        assert stats["max_rows_in_batch"] > 1  # generated together, not one at a time
        assert stats["batches"] < len(PROMPTS) * 2
        assert concurrent == sequential  # batching (left padding) does not change any answer
    finally:
        running.stop()


def test_queue_limit_gives_429_and_timeout_gives_504(tiny_model_dir):
    running = start_server(tiny_model_dir, max_concurrent=1, max_queue=0, max_tokens=2000, request_timeout_s=1.5)
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30)
        stream = client.completions.create(model="tiny", prompt="Tell a long story", max_tokens=2000,
                                           temperature=0, stream=True)
        chunks = iter(stream)
        next(chunks)  # the long request is now being generated
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="tiny", prompt="hi", max_tokens=2)
        with pytest.raises(openai.APIError, match="timed out"):
            for _ in chunks:  # bounded: the server ends it after request_timeout_s
                pass
        with pytest.raises(openai.APIStatusError) as info:
            client.completions.create(model="tiny", prompt="Tell a long story", max_tokens=2000, temperature=0)
        assert info.value.status_code == 504
        assert client.completions.create(model="tiny", prompt="hi", max_tokens=2).choices  # capacity freed
    finally:
        running.stop()


def test_graceful_shutdown_finishes_in_flight_requests(tiny_model_dir):
    running = start_server(tiny_model_dir)
    result: dict = {}

    def long_request() -> None:
        r = httpx.post(running.url + "/v1/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"model": "tiny", "prompt": "Once", "max_tokens": 300, "temperature": 0}, timeout=60)
        result["status"], result["body"] = r.status_code, r.json()

    thread = threading.Thread(target=long_request)
    thread.start()
    for _ in range(200):  # bounded wait until the engine picked the request up
        if running.served.engine.stats["rows"]:
            break
        time.sleep(0.05)
    running.stop()  # what SIGTERM/Ctrl-C does: stop accepting, finish in-flight work
    thread.join(60)
    assert result["status"] == 200
    assert result["body"]["usage"]["completion_tokens"] > 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.url + "/health", timeout=2)


def test_a_client_leaving_mid_stream_frees_its_slot(tiny_model_dir):
    running = start_server(tiny_model_dir, max_concurrent=1, max_queue=0, request_timeout_s=60)
    try:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"model": "tiny", "prompt": "Once", "max_tokens": 2000, "temperature": 0, "stream": True}
        with httpx.stream("POST", running.url + "/v1/completions", json=body, headers=headers, timeout=30) as r:
            next(r.iter_lines())  # generation has started; now hang up
        status = None
        for _ in range(100):  # bounded: ~10 s for the server to notice and drop the row
            status = httpx.post(running.url + "/v1/completions", headers=headers, timeout=30,
                                json={"model": "tiny", "prompt": "hi", "max_tokens": 2}).status_code
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200
    finally:
        running.stop()


def test_a_fractional_shutdown_timeout_reaches_uvicorn_unrounded(tiny_model_dir):
    from tuneforge.config.recipe import ModelConfig
    from tuneforge.config.serve import ServeConfig
    from tuneforge.serve.server import build, uvicorn_config

    cfg = ServeConfig(shutdown_timeout_s=0.5)
    served = build(ModelConfig(name=str(tiny_model_dir), device="cpu"), cfg, API_KEY)
    # rounded down to 0, in-flight requests would be cancelled at once instead of getting half a second
    assert uvicorn_config(served, cfg).timeout_graceful_shutdown == 0.5
