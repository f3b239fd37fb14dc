"""Instruction formats (OpenAI chat, Alpaca, ShareGPT, prompt/completion), detected and turned into chat.

Detection looks at the first readable record; every later record must have the same shape, and one
that does not (a mixed file) is a malformed row naming the field it lacks.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.problems import RowError

FORMAT_KEYS = {
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


def detect_format(record: dict[str, Any]) -> str | None:
    """The instruction format a record is in, or None for raw records (which need a template)."""
    for name, keys in FORMAT_KEYS.items():
        if all(k in record for k in keys):
            return name
    return None


def _text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)  # OpenAI content parts
    if value is None:
        raise RowError(field, "is null; expected text")
    raise RowError(field, f"expected text, got {type(value).__name__}", kind="malformed")


def _check_turns(messages: list[dict[str, str]], field: str) -> list[dict[str, str]]:
    if not any(m["role"] == "user" for m in messages):
        raise RowError(field, "the conversation has no user message")
    if messages[-1]["role"] != "assistant":
        raise RowError(field, f"the conversation must end with an assistant message (ends with {messages[-1]['role']})")
    return messages


def _chat(record: dict[str, Any]) -> list[dict[str, str]]:
    raw = record["messages"]
    if not isinstance(raw, list) or not raw:
        raise RowError("messages", f"expected a non-empty list of messages, got {type(raw).__name__ if raw != [] else 'an empty list'}")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RowError(where, f"expected an object with role and content, got {type(m).__name__}")
        if "role" not in m:
            raise RowError(f"{where}.role", "missing")
        if m["role"] not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {m['role']!r}; use one of {', '.join(ROLES)}")
        if "content" not in m:
            raise RowError(f"{where}.content", "missing")
        out.append({"role": m["role"], "content": _text(m["content"], f"{where}.content")})
    return _check_turns(out, "messages")


def _sharegpt(record: dict[str, Any]) -> list[dict[str, str]]:
    raw = record["conversations"]
    if not isinstance(raw, list) or not raw:
        raise RowError("conversations", "expected a non-empty list of turns")
    out = []
    for i, m in enumerate(raw):
        where = f"conversations[{i}]"
        if not isinstance(m, dict):
            raise RowError(where, f"expected an object with from and value, got {type(m).__name__}")
        speaker = m.get("from", m.get("role"))
        if speaker is None:
            raise RowError(f"{where}.from", "missing")
        role = SHAREGPT_ROLES.get(str(speaker).lower())
        if role is None:
            raise RowError(f"{where}.from", f"unknown speaker {speaker!r}; use human, gpt or system")
        if "value" not in m and "content" not in m:
            raise RowError(f"{where}.value", "missing")
        out.append({"role": role, "content": _text(m.get("value", m.get("content")), f"{where}.value")})
    return _check_turns(out, "conversations")


def _alpaca(record: dict[str, Any]) -> list[dict[str, str]]:
    instruction = _text(record["instruction"], "instruction")
    extra = record.get("input")
    extra = _text(extra, "input") if extra not in (None, "") else ""
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    if not user.strip():
        raise RowError("instruction", "is empty")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": _text(record["output"], "output")}]


def _prompt_completion(record: dict[str, Any]) -> list[dict[str, str]]:
    prompt = _text(record["prompt"], "prompt")
    if not prompt.strip():
        raise RowError("prompt", "is empty")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(record["completion"], "completion")}]


CONVERTERS = {"chat": _chat, "sharegpt": _sharegpt, "alpaca": _alpaca, "prompt_completion": _prompt_completion}


def to_messages(record: dict[str, Any], fmt: str) -> list[dict[str, str]]:
    """The record as a chat conversation; a record of another shape raises RowError naming the missing field."""
    for key in FORMAT_KEYS[fmt]:
        if key not in record:
            raise RowError(key, f"missing (the file is in {fmt} format, detected from its first record)")
    return CONVERTERS[fmt](record)
