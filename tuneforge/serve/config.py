"""The ``serve`` section of a recipe."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config.base import Section


class ServeConfig(Section):
    """The OpenAI-compatible HTTP server. Closed by default."""

    host: str = Field("127.0.0.1", description="Bind address. Loopback unless you mean to expose it.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    api_key_env: str = Field("TUNEFORGE_API_KEY", description="Environment variable holding the API key.")
    adapters: dict[str, str] = Field(default_factory=dict, description="Served adapters: model name -> adapter folder.")
    max_tokens: int = Field(512, ge=1, description="Cap on max_tokens per request.")
    max_concurrent: int = Field(8, ge=1, description="Requests generated at once (batched together).")
    max_queue: int = Field(32, ge=0, description="Requests waiting beyond max_concurrent; more get 429.")
    request_timeout_s: float = Field(120.0, gt=0, description="Per-request time limit.")
