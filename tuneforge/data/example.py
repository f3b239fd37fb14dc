"""One prepared example: a conversation plus the metadata evaluation needs, and its content hashes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def content_hash(value: Any) -> str:
    """A stable 16-hex-digit SHA-256 of a JSON value (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class ChatExample:
    """A prepared example as text (its conversation and metadata); training turns it into token ids
    (``tuneforge.train.data.TokenizedExample``)."""

    messages: list[dict[str, str]]
    task: str
    label: str | None = None
    label_set: list[str] | None = None
    file: str = ""
    line: int | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return content_hash(self.messages)

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]

    @property
    def input_key(self) -> str:
        """Hash of what the model sees (system prompt excluded): equal inputs share a split."""
        return content_hash([m for m in self.messages[:-1] if m["role"] != "system"])

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def text(self) -> str:
        """All non-system text, for duplicate and PII checks."""
        return "\n".join(m["content"] for m in self.messages if m["role"] != "system")

    def to_json(self) -> dict[str, Any]:
        meta = {"id": self.id, "task": self.task, "label": self.label, "label_set": self.label_set}
        meta.update({k: v for k, v in self.extra_meta.items() if k not in meta})
        return {"messages": self.messages, "meta": meta}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(", ", ": "))
