"""Text that cannot be written: a lone surrogate (``"\\ud800"`` in JSON or YAML) decodes into a Python
string but fails on every UTF-8 encode later. Readers of user files (recipes, data) check with this and
report the field instead of failing deep inside with a traceback."""

from __future__ import annotations

from typing import Any


def _surrogate(text: str) -> str | None:
    """What is wrong with ``text`` if it holds a lone surrogate, else None."""
    bad = next((c for c in text if "\ud800" <= c <= "\udfff"), None)
    if bad is None:
        return None
    return f"invalid Unicode escape \\u{ord(bad):04x} (half of a surrogate pair, not a character); fix the escape"


def lone_surrogate(value: Any, path: str = "") -> tuple[str, str] | None:
    """(field, problem) for the first string or key in a decoded JSON value that holds a lone surrogate."""
    if isinstance(value, str):
        problem = _surrogate(value)
        return (path or "(record)", problem) if problem else None
    if isinstance(value, dict):
        for k, v in value.items():
            if problem := _surrogate(k):
                return path or "(record)", f"a key has an {problem}"
            if found := lone_surrogate(v, f"{path}.{k}" if path else k):
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if found := lone_surrogate(v, f"{path}[{i}]"):
                return found
    return None
