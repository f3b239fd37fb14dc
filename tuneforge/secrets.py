"""Keep credentials out of every file and log a run writes.

A recipe may hold a URL with a password in it (an Optuna ``tune.storage: postgresql://user:pw@host/db``),
and the same text reaches ``argv``, the resolved ``recipe.yaml``, trial recipes, the manifest, log lines
and error messages. Everything tuneforge writes goes through :func:`redact_text` (or :func:`redact`
for structured data), which keeps a URL readable but replaces its secret parts:

* the password of ``scheme://user:password@host`` -> ``scheme://user:***@host``;
* the value of secret-looking query or ``key=value`` parameters (``password=``, ``token=``,
  ``api_key=``, ...) -> ``password=***``.

Redacted text is for people; the process keeps the real values in memory. Better still, keep the
secret out of the recipe entirely: ``tune.storage_env`` names an environment variable holding the URL.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

# Userinfo as SQLAlchemy parses it: the user stops at ':' or '/', the password at '@' (so it may hold
# '/'). Quotes and whitespace end it too, so a URL quoted inside a message stays bounded.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<secret>[^@\s'\"]+)@")

SECRET_KEYS = (
    "password", "passwd", "pwd", "sslpassword", "secret", "client_secret", "token", "access_token",
    "auth_token", "refresh_token", "api_key", "apikey", "api-key", "key", "sig", "signature",
)
# ``key=value`` where key is one of the above, as a query parameter (``?token=...&``), in a libpq DSN
# (``host=h password=x``) or on a command line (``--set x.api_key=...``). The key must start a word.
_KEY_VALUE = re.compile(
    r"(?P<head>(?<![A-Za-z0-9_\-])(?:" + "|".join(re.escape(k) for k in SECRET_KEYS) + r")=)"
    r"(?P<secret>[^&;\s'\",]+)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """``text`` with URL passwords and secret query/key=value parameters replaced by ``***``."""
    if "=" not in text and "@" not in text:  # the common case: nothing to look at
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['head']}{MASK}", text)


def redact_url(url: str | None) -> str | None:
    """A URL fit to print or store: ``postgresql://user:***@host/db`` (``None`` stays ``None``)."""
    return None if url is None else redact_text(url)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted; keys are kept."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output (message, arguments and traceback alike) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))
