"""Request bodies of the OpenAI API subset tuneforge serves, validated before any work is queued.

Fields the OpenAI clients send that do not change the answer (``user``, ``stream_options``...) are
accepted; features tuneforge does not implement (tools, logprobs, penalties...) are rejected with a 400
naming the field rather than silently ignored. Server-side caps (``max_tokens``, ``n``, stop sequences)
are enforced in ``app.py`` where the configured limits are known.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1, max_length=256, description="Base model id or adapter name (see /v1/models).")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (capped by the server).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, description="Answers per prompt (capped by the server).")
    stop: str | list[str] | None = Field(None, description="Up to the server's cap of stop sequences.")
    stream: bool = Field(False, description="Server-sent events, one chunk per text delta.")
    stream_options: dict[str, Any] | None = Field(None, description="{'include_usage': true} adds a usage chunk.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Makes sampling reproducible.")
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")
    presence_penalty: float | None = Field(None, description="Only 0 is supported.")
    frequency_penalty: float | None = Field(None, description="Only 0 is supported.")

    def unsupported(self) -> str | None:
        """Name of a requested but unimplemented feature, or None."""
        extra = self.model_extra or {}
        for name in ("tools", "functions", "tool_choice", "function_call", "logit_bias", "logprobs",
                     "top_logprobs", "best_of", "suffix", "response_format", "echo"):
            value = extra.get(name)
            if value not in (None, False, [], {}) and not (name == "response_format" and value == {"type": "text"}):
                return name
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                return name
        return None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Body):
    messages: list[ChatMessage] = Field(..., min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens.")

    @field_validator("messages")
    @classmethod
    def _last_not_empty(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.text().strip() for m in messages):
            raise ValueError("every message is empty")
        return messages


class CompletionRequest(_Body):
    prompt: str | list[str] = Field(..., description="One prompt or a list of prompts.")
    max_tokens: int | None = Field(16, ge=1, description="Most tokens to generate (OpenAI default 16).")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
