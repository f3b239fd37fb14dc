"""Closed by default, like `tuneforge serve`: a login form for the API key, and CSRF checks on POSTs.

The session cookie holds ``HMAC(key, "tuneforge-ui session")``, not the key: it survives a UI restart
with the same key, and changing the key logs everyone out. It is HttpOnly and SameSite=Strict.

Cross-site requests: every POST must carry the ``tf_csrf`` cookie's value back, in a form field
``csrf`` or an ``X-CSRF-Token`` header (double submit: another site can make the browser send the
cookie but cannot read it to copy it into the form), and an ``Origin`` header, when the browser sends
one, must be this server's own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request

SESSION_COOKIE = "tf_session"
CSRF_COOKIE = "tf_csrf"


def session_token(key: str) -> str:
    return hmac.new(key.encode("utf-8"), b"tuneforge-ui session", hashlib.sha256).hexdigest()


def logged_in(request: Request, key: str | None) -> bool:
    if key is None:
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return hmac.compare_digest(cookie.encode("utf-8"), session_token(key).encode("utf-8"))


def key_ok(given: str, key: str) -> bool:
    return hmac.compare_digest(given.strip().encode("utf-8"), key.encode("utf-8"))


def csrf_token(request: Request) -> str:
    """The browser's CSRF token (its cookie), or a new one the response must set."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not sent (same-origin GET-like navigations, non-browser clients): the token decides
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted or not same_origin(request):
        return False
    return hmac.compare_digest(cookie.encode("utf-8"), submitted.encode("utf-8"))
