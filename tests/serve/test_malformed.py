"""Malformed requests get a 4xx in the OpenAI error shape with a clear message: never a 5xx or a traceback."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.serve.conftest import API_KEY

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HI = [{"role": "user", "content": "hi"}]


def chat(**fields) -> bytes:
    return json.dumps({"model": "tiny", "messages": HI, "max_tokens": 2, **fields}).encode()


def completion(**fields) -> bytes:
    return json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 2, **fields}).encode()


CASES = [
    # (id, path, raw body, status, words the message must contain)
    ("bad json", COMPLETIONS, b"{not json", 400, "json"),
    ("truncated json", CHAT, chat()[:-5], 400, "json"),
    ("empty body", CHAT, b"", 400, "body is empty"),
    ("array body", CHAT, b"[1, 2]", 400, "invalid request"),
    ("string body", COMPLETIONS, b'"hello"', 400, "invalid request"),
    ("deep nesting", CHAT, b"[" * 100_000 + b"]" * 100_000, 400, ""),
    ("not utf-8", CHAT, b'{"model": "\xff\xfe"}', 400, ""),
    ("unknown model", CHAT, chat(model="gpt-9"), 404, "gpt-9"),
    ("model wrong type", CHAT, chat(model=5), 400, "model"),
    ("huge n", CHAT, chat(n=10**30), 400, "n="),
    ("n zero", COMPLETIONS, completion(n=0), 400, "n"),
    ("n string", COMPLETIONS, completion(n="many"), 400, "n"),
    ("max_tokens string", CHAT, chat(max_tokens="ten"), 400, "max_tokens"),
    ("max_tokens negative", COMPLETIONS, completion(max_tokens=-3), 400, "max_tokens"),
    ("max_tokens huge", COMPLETIONS, completion(max_tokens=10**40), 400, "max_tokens"),
    ("temperature NaN", CHAT, chat()[:-1] + b', "temperature": NaN}', 400, "temperature"),
    ("max_tokens Infinity", CHAT, chat()[:-1] + b', "max_completion_tokens": Infinity}', 400, "max_completion_tokens"),
    ("top_p zero", CHAT, chat(top_p=0), 400, "top_p"),
    ("seed negative", CHAT, chat(seed=-1), 400, "seed"),
    ("stop number", CHAT, chat(stop=5), 400, "stop"),
    ("stop empty string", CHAT, chat(stop=[""]), 400, "stop"),
    ("stream_options string", CHAT, chat(stream=True, stream_options="yes"), 400, "stream_options"),
    ("empty messages", CHAT, chat(messages=[]), 400, "messages"),
    ("messages not a list", CHAT, chat(messages="hi"), 400, "messages"),
    ("message without role", CHAT, chat(messages=[{"content": "hi"}]), 400, "role"),
    ("unknown role", CHAT, chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "role"),
    ("content number", CHAT, chat(messages=[{"role": "user", "content": 5}]), 400, "content"),
    ("image part", CHAT, chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]),
     400, "content"),
    ("every message empty", CHAT, chat(messages=[{"role": "user", "content": "  "}]), 400, "empty"),
    ("lone surrogate in chat", CHAT, b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800"}]}',
     400, "surrogate"),
    ("lone surrogate in prompt", COMPLETIONS, b'{"model": "tiny", "prompt": "a\\udfff b"}', 400, "surrogate"),
    ("lone surrogate in model", CHAT, chat()[:-1] + b', "model": "\\ud800"}', 400, "model"),
    ("empty prompt", COMPLETIONS, completion(prompt=""), 400, "empty"),
    ("no prompts", COMPLETIONS, completion(prompt=[]), 400, "prompts"),
    ("too many prompts", COMPLETIONS, completion(prompt=["a"] * 50), 400, "prompts"),
    ("token-id prompt", COMPLETIONS, completion(prompt=[1, 2, 3]), 400, "prompt"),
    ("unsupported tools", CHAT, chat(tools=[{"type": "function"}]), 400, "tools"),
    ("penalty", CHAT, chat(presence_penalty=1.5), 400, "presence_penalty"),
]


@pytest.mark.parametrize(("path", "raw", "status", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_request_gets_a_clear_4xx(server, path, raw, status, needle):
    r = httpx.post(server.url + path, content=raw, timeout=60,
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and needle.lower() in error["message"].lower()
    assert "Traceback" not in r.text and ".py" not in r.text


@pytest.mark.parametrize(("method", "path", "status"), [("GET", CHAT, 405), ("POST", "/v1/nothing", 404),
                                                        ("DELETE", "/v1/models", 405)])
def test_wrong_method_or_path_is_a_json_4xx(server, method, path, status):
    r = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == status and r.json()["error"]["message"]
