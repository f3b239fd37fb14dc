"""Turn a growing list of token ids into text deltas, honouring stop sequences while streaming.

Two things make this harder than ``decode(new_token)``: a multi-byte character may span tokens (hold
back text ending in U+FFFD until it completes), and a stop sequence may span tokens (hold back any
tail that could still become a stop sequence, so a client never sees part of one).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TextStream:
    tokenizer: object
    stop: list[str]
    max_tokens: int
    eos_ids: frozenset[int]
    ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the decoded text already sent
    finish_reason: str | None = None

    def push(self, token: int) -> str:
        """Add one generated token; return the new text that is safe to send (maybe empty)."""
        if self.finish_reason is not None:
            return ""
        if token in self.eos_ids:
            self.finish_reason = "stop"
            return self._flush(self._text())
        self.ids.append(token)
        text = self._text()
        if self.stop:
            start = max(0, self.emitted - max(len(s) for s in self.stop))
            hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.finish_reason = "stop"
                return self._flush(text[: min(hits)])
        if len(self.ids) >= self.max_tokens:
            self.finish_reason = "length"
            return self._flush(text)
        safe = len(text)
        if text.endswith("\ufffd"):
            safe = len(text.rstrip("\ufffd"))
        safe -= self._stop_prefix_len(text[:safe])
        if safe <= self.emitted:
            return ""
        piece = text[self.emitted : safe]
        self.emitted = safe
        return piece

    def text(self) -> str:
        """The full answer so far (after finishing: exactly what was streamed)."""
        return self._text()[: self.emitted] if self.finish_reason else self._text()

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def _flush(self, text: str) -> str:
        text = text.rstrip("\ufffd") if self.finish_reason == "length" else text
        piece = text[self.emitted :] if len(text) > self.emitted else ""
        self.emitted = max(self.emitted, len(text))
        return piece

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop sequence."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
