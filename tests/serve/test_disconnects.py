"""Clients that vanish (before, during or after the first chunk; streaming or not) give their slot back
at once, and the engine stops generating their rows."""

from __future__ import annotations

import socket
import struct
import time

import httpx
import pytest

from tests.serve.asgi import exchange, run
from tests.serve.conftest import API_KEY, build_started, start_server

LONG = 1500  # tokens: far more than a vanished client lets the engine generate


@pytest.fixture(scope="module")
def one_slot(tiny_model_dir):
    """The app around a started engine that admits one row at a time: any leak shows as a 429."""
    served = build_started(tiny_model_dir, max_concurrent=1, max_queue=0, max_tokens=LONG)
    yield served
    served.engine.stop(5)


def long_body(path: str, stream: bool) -> dict:
    body = {"model": "tiny", "max_tokens": LONG, "temperature": 0, "stream": stream}
    if path == "/v1/chat/completions":
        return {**body, "messages": [{"role": "user", "content": "Tell a long story"}]}
    return {**body, "prompt": "Once upon a time"}


def dropped(engine) -> int:
    return engine.stats.get("rows_dropped", 0)


def wait_for_drop(engine, before: int) -> bool:
    for _ in range(600):  # bounded: 30 s; a dropped row stops at the engine's next step
        if dropped(engine) > before:
            return True
        time.sleep(0.05)
    return False


PATHS = ("/v1/chat/completions", "/v1/completions")
CASES = [
    *[(path, True, when, spec) for path in PATHS for when in ("before", "generating", "first-chunk",
                                                              "after-first-chunk") for spec in ("2.3", "2.4")],
    *[(path, False, when, "2.3") for path in PATHS for when in ("before", "generating")],
]


@pytest.mark.parametrize(("path", "stream", "when", "spec"), CASES)
def test_vanished_client_frees_its_slot_and_its_rows_stop(one_slot, path, stream, when, spec):
    app, engine = one_slot.app, one_slot.engine
    before = dropped(engine)
    run(exchange(app, path, long_body(path, stream), hang_up=when, engine=engine, spec=spec))
    # the very next request is admitted (the only slot is free again) ...
    after = run(exchange(app, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 2}))
    assert after.status == 200, after.chunks
    # ... and the engine dropped the vanished request's row instead of generating LONG tokens for nobody
    assert wait_for_drop(engine, before)


def test_a_client_that_reads_the_whole_answer_is_not_counted_as_dropped(one_slot):
    app, engine = one_slot.app, one_slot.engine
    before = dropped(engine)
    r = run(exchange(app, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 3, "stream": True}))
    assert r.status == 200 and b"[DONE]" in b"".join(r.chunks)
    assert dropped(engine) == before


def _vanish(port: int, path: str, stream: bool, when: str) -> None:
    """A raw-socket client that resets the connection at ``when`` (no polite close)."""
    body = httpx.Request("POST", "http://x", json=long_body(path, stream)).content
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head + body)
        seen = b""
        needle = {"before": None, "headers": b"\r\n\r\n", "first-chunk": b"data:"}[when]
        while needle is not None and needle not in seen:  # bounded by the socket timeout
            data = s.recv(4096)
            if not data:
                break
            seen += data
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close


def test_many_vanishing_clients_over_real_sockets_leave_the_server_usable(tiny_model_dir):
    running = start_server(tiny_model_dir, max_concurrent=1, max_queue=1, max_tokens=LONG)
    port = int(running.url.rsplit(":", 1)[1])
    try:
        for _ in range(3):
            for path in ("/v1/chat/completions", "/v1/completions"):
                for stream, when in ((True, "before"), (True, "headers"), (True, "first-chunk"),
                                     (False, "before")):
                    _vanish(port, path, stream, when)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        status = None
        for _ in range(300):  # bounded: ~30 s for the server to notice the last hang-ups
            status = httpx.post(running.url + "/v1/completions", headers=headers, timeout=60,
                                json={"model": "tiny", "prompt": "hi", "max_tokens": 2}).status_code
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200
        assert dropped(running.served.engine) >= 1
    finally:
        running.stop()
