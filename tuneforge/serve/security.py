"""Closed by default: API-key checks, body-size limits, and where the key comes from.

The key is compared in constant time (``hmac.compare_digest``) so response timing reveals nothing about
how much of a guess was right. The server refuses to start without a key unless ``--no-auth`` is given
and it binds a loopback address only.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import stat
from pathlib import Path

from tuneforge.errors import UserError
from tuneforge.serve.errors import error_body

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(env_name: str, key_file: str | None, no_auth: bool, host: str) -> str | None:
    """The API key to require, or None when auth is explicitly off on a loopback host."""
    if no_auth:
        if not is_loopback(host):
            raise UserError(
                f"--no-auth is only allowed when binding a loopback address (127.0.0.1, ::1), not {host!r}"
            )
        return None
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise UserError(f"--api-key-file {path}: file not found")
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise UserError(f"--api-key-file {path}: file is empty")
        warn_if_readable_by_others(path)
    else:
        key = os.environ.get(env_name, "").strip()
        if not key:
            raise UserError(
                f"no API key: set ${env_name} (serve.api_key_env), pass --api-key-file, or use --no-auth "
                "on a loopback host for local experiments"
            )
    if len(key) < 8:
        raise UserError("the API key is shorter than 8 characters; use a long random key (e.g. `openssl rand -hex 32`)")
    return key


def warn_if_readable_by_others(path: Path) -> bool:
    """Warn (and return True) when group or others may read the key file: anyone who can read it can
    use the server. Not refused, because some setups share a key through a group on purpose."""
    mode = path.stat().st_mode
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return False
    who = " and ".join(w for bit, w in ((stat.S_IRGRP, "its group"), (stat.S_IROTH, "every user")) if mode & bit)
    log.warning("--api-key-file %s is readable by %s (mode %s); `chmod 600 %s` keeps the key yours",
                path, who, stat.filemode(mode), path)
    return True


def key_matches(header: str | None, key: str) -> bool:
    """``Authorization: Bearer <key>``, compared in constant time."""
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), key.encode("utf-8"))


class BodyLimit:
    """ASGI middleware: reject bodies larger than ``limit`` bytes with 413, chunked bodies included.

    The body is read (up to the limit) before the app sees it and replayed, so an oversized upload is
    refused without the app ever parsing it.
    """

    def __init__(self, app, limit: int, exempt: set[tuple[str, str]] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt or set()  # (method, path) of routes that count their own bytes as they stream

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (scope.get("method"), scope.get("path")) in self.exempt:
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._reject(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._reject(send)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # waits for http.disconnect, as the app expects

        await self.app(scope, replay, send)

    async def _reject(self, send) -> None:
        payload = json.dumps(error_body(
            f"request body larger than the server's limit of {self.limit} bytes (serve.max_body_bytes)",
            "invalid_request_error", "body_too_large",
        )).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
