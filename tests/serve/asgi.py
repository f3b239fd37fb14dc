"""Drive the ASGI app in-process, as uvicorn does, with a client that can hang up at a chosen moment.

A real socket cannot say *when* the server notices a hang-up; here the test decides: the client's
``http.disconnect`` arrives before the server answers, while the engine generates, as the first body
chunk goes out, or after it. Sending yields to the event loop, as a server under back-pressure does.
With ASGI spec 2.3 (uvicorn) whatever is sent to a vanished client is dropped silently; with 2.4
(servers that report it) sending to a vanished client raises OSError.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect

from tests.serve.conftest import API_KEY

HANG_UPS = ("before", "generating", "first-chunk", "after-first-chunk")


@dataclass
class Exchange:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(b"".join(self.chunks))


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]], spec: str) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def exchange(app, path: str, body: dict | bytes | None = None, *, method: str = "POST",
                   hang_up: str | None = None, engine=None, api_key: str | None = API_KEY,
                   spec: str = "2.3", gone: asyncio.Event | None = None, timeout: float = 300) -> Exchange:
    """One request; ``hang_up`` is one of HANG_UPS or None (the client stays to the end, or leaves
    when the caller sets ``gone``).

    "generating" needs ``engine``: the client leaves once the engine has taken a new row.
    """
    assert hang_up in (None, *HANG_UPS)
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if api_key:
        headers.append((b"authorization", f"Bearer {api_key}".encode()))
    gone = gone or asyncio.Event()
    if hang_up == "before":
        gone.set()
    result = Exchange()
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        await asyncio.sleep(0)
        if gone.is_set():
            if spec >= "2.4":
                raise OSError("the client disconnected")
            return
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body" and message.get("body"):
            if hang_up == "first-chunk":
                gone.set()
                return
            result.chunks.append(message["body"])
            if hang_up == "after-first-chunk":
                gone.set()

    async def leave_when_generating() -> None:
        rows = engine.stats["rows"]
        for _ in range(30_000):  # bounded: 300 s
            if engine.stats["rows"] > rows:
                gone.set()
                return
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(leave_when_generating()) if hang_up == "generating" else None
    try:
        await asyncio.wait_for(app(_scope(method, path, headers, spec), receive, send), timeout)
    except (OSError, ClientDisconnect):
        if not gone.is_set():  # the server's own business once the client has left (uvicorn logs it)
            raise
    finally:
        if watcher is not None:
            watcher.cancel()
    return result


def run(coro):
    """Run one exchange (or a few) on a fresh event loop, as a test body."""
    return asyncio.run(coro)
