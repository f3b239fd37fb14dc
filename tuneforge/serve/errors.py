"""Errors in the OpenAI shape, and a request id on every response.

Every response carries ``X-Request-ID`` (the client's own, when it sends a sane one, else a fresh one).
A 5xx never carries exception text, file paths or library messages: the details go to the server log
under the request id, and the body names only the id, so an operator can find the log line and a
client learns nothing about the server's insides.
"""

from __future__ import annotations

import json
import logging
import re
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a client's id is echoed and logged: keep it tame


class ApiError(Exception):
    """An answer other than 200: status, a message for the client, and the OpenAI ``code``/``param``."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None,
               request_id: str | None = None) -> dict:
    """The OpenAI error shape, so official clients raise the matching exception with our message."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def server_error_body(message: str, code: str, request_id: str) -> dict:
    """A 5xx body: a fixed message plus the id to look up in the server log, nothing more."""
    return error_body(f"{message} (request id {request_id}; the server log has the details)", "server_error",
                      code, request_id=request_id)


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or "-"


class RequestId:
    """ASGI middleware: give each request an id, send it back as ``X-Request-ID``, and turn any
    exception the app lets through into a logged 500 that names only that id."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        rid = incoming if _SANE_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), (REQUEST_ID_HEADER.lower().encode(), rid.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s %s %s failed", rid, scope.get("method"), scope.get("path"))
            if started:  # the status line is out: all we can do is end the response (uvicorn closes it)
                return
            payload = json.dumps(server_error_body("internal server error", "internal_error", rid)).encode()
            await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
            await send_with_id({"type": "http.response.body", "body": payload})


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status >= 500:
        rid = request_id(request)
        log.error("request %s: %d %s: %s", rid, exc.status, exc.code, exc.message)
        return JSONResponse(server_error_body(exc.message, exc.code or "server_error", rid), exc.status)
    return JSONResponse(error_body(exc.message, "invalid_request_error", exc.code, exc.param), exc.status,
                        headers=headers)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for e in exc.errors()[:5]:
        if tuple(e["loc"]) == ("body",) and e["type"] == "missing":
            problems.append("the body is empty; send a JSON object")
            continue
        where = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
        problems.append(f"{where}: {e['msg']}")
    first = exc.errors()[0]["loc"] if exc.errors() else ()
    param = ".".join(str(p) for p in first if p != "body") or None
    return JSONResponse(error_body("invalid request: " + "; ".join(problems), "invalid_request_error",
                                   "invalid_request", param), 400)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), exc.status_code,
                        headers=getattr(exc, "headers", None))


def install(app: FastAPI) -> None:
    """Register the error handlers and the request-id middleware (outermost of the app's own)."""
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_middleware(RequestId)
