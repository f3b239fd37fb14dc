"""The ``serve`` section of a recipe."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config.base import Section


class ServeConfig(Section):
    """The OpenAI-compatible HTTP server. Closed by default."""

    host: str = Field("127.0.0.1", description="Bind address. Loopback unless you mean to expose it.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    api_key_env: str = Field("TUNEFORGE_API_KEY", description="Environment variable holding the API key.")
    adapters: dict[str, str] = Field(default_factory=dict, description="Served adapters: model name -> adapter folder.")
    served_name: str | None = Field(
        None, description="Model id of the base model in the API. Default: the model name's last path part."
    )
    max_tokens: int = Field(512, ge=1, description="Cap on max_tokens per request (larger requests get 400).")
    max_n: int = Field(4, ge=1, description="Cap on n (answers per prompt).")
    max_prompts: int = Field(8, ge=1, description="Cap on prompts per /v1/completions request.")
    max_stop: int = Field(4, ge=0, description="Cap on the number of stop sequences.")
    max_stop_chars: int = Field(64, ge=1, description="Cap on the length of each stop sequence.")
    max_prompt_tokens: int = Field(
        4096, ge=1, description="Longest prompt in tokens (chat: after the chat template); longer gets 400. "
        "Bounds the memory and time one request can take (the model's context still applies).",
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body; larger gets 413.")
    max_concurrent: int = Field(8, ge=1, description="Rows generated at once (batched together).")
    max_queue: int = Field(
        32, ge=0, description="Rows waiting beyond max_concurrent (a request needs n x prompts rows); a request "
        "that does not fit gets 429, one that could never fit gets 400.",
    )
    batch_window_ms: float = Field(
        10.0, ge=0, description="When the engine is idle, how long it waits after a request for another one "
        "(4 windows in all at most), so a burst is prefilled together. While it generates, new requests join at "
        "the next step.",
    )
    request_timeout_s: float = Field(120.0, gt=0, description="Per-request time limit (504 after it).")
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="On Ctrl-C/SIGTERM, how long in-flight requests get to finish (fractions allowed)."
    )
    state_dir: str | None = Field(
        None, description="Folder of the fine-tuning API (/v1/files, /v1/fine_tuning/jobs): uploaded files, the "
        "jobs database and each job's run folder. `tuneforge serve` uses serve-state unless --no-fine-tuning; "
        "unset: no fine-tuning routes. One server per folder.",
    )
    max_file_bytes: int = Field(512_000_000, ge=1024, description="Largest uploaded file (POST /v1/files); larger gets 413.")
    max_training_jobs: int = Field(1, ge=1, description="Fine-tuning jobs trained at once (each in its own process).")
    training_device: str = Field(
        "auto", description="Device of the training worker processes (auto, cpu, cuda, cuda:N)."
    )
