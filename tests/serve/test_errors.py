"""5xx answers name a request id and nothing of the server's insides; /health notices a dead engine."""

from __future__ import annotations

import json
import logging
import time

import pytest

from tests.serve.asgi import exchange, run
from tests.serve.conftest import build_started

SECRET = "/srv/secret/site-packages/torch/nn/functional.py: CUDA error: device-side assert"


@pytest.fixture()
def served(tiny_model_dir):
    served = build_started(tiny_model_dir)
    yield served
    served.engine.stop(5)


def completion(**extra) -> dict:
    return {"model": "tiny", "prompt": "Once", "max_tokens": 3, "temperature": 0, **extra}


def assert_internals_hidden(text: str) -> None:
    for leak in ("secret", "site-packages", ".py", "CUDA", "Traceback", "RuntimeError"):
        assert leak not in text


def fail_generation(engine, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError(SECRET)

    monkeypatch.setattr(engine, "_step", boom)


def test_a_failed_generation_is_a_500_with_a_request_id_and_no_internals(served, monkeypatch, caplog):
    fail_generation(served.engine, monkeypatch)
    with caplog.at_level(logging.ERROR):
        r = run(exchange(served.app, "/v1/completions", completion()))
    assert r.status == 500
    assert_internals_hidden(b"".join(r.chunks).decode())
    rid = r.headers["x-request-id"]
    error = r.json()["error"]
    assert error["request_id"] == rid and rid in error["message"] and error["type"] == "server_error"
    # the operator finds the details under the same id
    assert any(rid in rec.getMessage() for rec in caplog.records)
    assert SECRET in caplog.text


def test_a_failed_stream_reports_the_request_id_in_band_without_internals(served, monkeypatch):
    fail_generation(served.engine, monkeypatch)
    r = run(exchange(served.app, "/v1/completions", completion(stream=True)))
    assert r.status == 200  # headers were sent before generation failed
    text = b"".join(r.chunks).decode()
    assert_internals_hidden(text)
    error = json.loads(text.split("data: ")[-1])["error"]
    assert error["request_id"] == r.headers["x-request-id"] and error["code"] == "generation_failed"


def test_an_unexpected_exception_in_a_route_is_a_json_500_with_the_request_id(served, monkeypatch, caplog):
    def broken_tokenizer(*args, **kwargs):
        raise ValueError(SECRET)

    monkeypatch.setattr(served.engine, "tokenizer", broken_tokenizer)
    with caplog.at_level(logging.ERROR):
        r = run(exchange(served.app, "/v1/completions", completion()))
    assert r.status == 500
    assert_internals_hidden(b"".join(r.chunks).decode())
    rid = r.headers["x-request-id"]
    assert r.json()["error"]["request_id"] == rid
    assert any(rid in rec.getMessage() for rec in caplog.records) and SECRET in caplog.text


def test_every_response_carries_a_request_id_and_a_sane_client_id_is_kept(served):
    ok = run(exchange(served.app, "/v1/completions", completion()))
    bad = run(exchange(served.app, "/v1/completions", {"model": "nope", "prompt": "x"}))
    assert ok.status == 200 and len(ok.headers["x-request-id"]) >= 16
    assert bad.status == 404 and bad.headers["x-request-id"] != ok.headers["x-request-id"]


def test_health_reports_a_dead_engine_thread_and_requests_get_503_not_a_hang(served, monkeypatch):
    assert run(exchange(served.app, "/health", method="GET")).status == 200

    def crash(*args) -> list:
        raise RuntimeError("the worker loop crashed")

    monkeypatch.setattr(served.engine, "_take", crash)
    for _ in range(200):  # bounded: the worker calls _take at least every 50 ms
        if not served.engine._thread.is_alive():
            break
        time.sleep(0.05)
    health = run(exchange(served.app, "/health", method="GET"))
    assert health.status == 503 and health.json()["status"] == "unhealthy"
    r = run(exchange(served.app, "/v1/completions", completion(), timeout=60))
    assert r.status == 503 and "restart" in r.json()["error"]["message"]
