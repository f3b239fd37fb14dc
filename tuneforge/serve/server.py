"""Assemble and run the server: load the base model once, register adapters, start uvicorn."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.recipe import ModelConfig
from tuneforge.config.serve import ServeConfig
from tuneforge.errors import UserError
from tuneforge.models.adapters import PROMPT_LEARNING_TYPES, adapter_type

log = logging.getLogger(__name__)


@dataclass
class Served:
    app: object
    engine: object
    base_id: str


def check_adapter(name: str, folder: str | Path) -> Path:
    """Validate an adapter folder at startup (its weights load lazily on first request)."""
    path = Path(folder)
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise UserError(f"adapter {name!r}: {path} is not a PEFT adapter folder (no adapter_config.json)")
    if not any((path / f).is_file() for f in ("adapter_model.safetensors",)):
        raise UserError(f"adapter {name!r}: {path} has no adapter_model.safetensors")
    kind = adapter_type(path)
    if kind in PROMPT_LEARNING_TYPES:
        raise UserError(f"adapter {name!r}: {kind} adapters cannot be served (they change the prompt, not weights); "
                        "serve LoRA-family adapters")
    return path


def base_id_for(model_name: str, served_name: str | None) -> str:
    if served_name:
        return served_name
    path = Path(model_name)
    return path.stem if path.suffix == ".gguf" else (path.name or model_name)


def load_base(model: ModelConfig):
    """The base model and tokenizer; int8 folders written by `tuneforge export --int8` are recognised."""
    from tuneforge.export.quantize import is_int8_folder, load_int8_model
    from tuneforge.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model.name, model.trust_remote_code)
    if is_int8_folder(model.name):
        if model.dtype not in ("auto", "float32"):
            raise UserError(f"{model.name}: an int8 export is served in its own format (int8 weights, float32 "
                            f"activations); drop --dtype {model.dtype} or serve the float32 model")
        return load_int8_model(model.name), tokenizer
    return load_model(model.model_copy(update={"adapter": None})), tokenizer


def build(model: ModelConfig, cfg: ServeConfig, api_key: str | None, loaded=None) -> Served:
    """Create the engine and app. ``loaded`` = (model, tokenizer) to reuse an already loaded base."""
    from tuneforge.serve.app import create_app
    from tuneforge.serve.engine import Engine

    adapters = {name: check_adapter(name, folder) for name, folder in cfg.adapters.items()}
    base_id = base_id_for(model.name, cfg.served_name)
    if base_id in adapters:
        raise UserError(f"adapter name {base_id!r} is also the base model's id; rename it or set serve.served_name")
    finetune = None
    if cfg.state_dir is not None:  # before the model loads: a second server on the folder is refused at once
        from tuneforge.serve.finetune.manager import FineTuning

        finetune = FineTuning(cfg, model, base_id, lambda name, path: app.state.serve.add_adapter(name, path))
    net, tokenizer = loaded if loaded is not None else load_base(model)
    engine = Engine(net, tokenizer, adapters, max_batch=cfg.max_concurrent, max_waiting=cfg.max_queue,
                    batch_window_s=cfg.batch_window_ms / 1000)
    app = create_app(engine, cfg, base_id, api_key, finetune)
    return Served(app, engine, base_id)


def uvicorn_config(served: Served, cfg: ServeConfig, log_level: str = "info"):
    """The uvicorn settings `tuneforge serve` runs with (tests run the same)."""
    import uvicorn

    # uvicorn types the grace period as int but only hands it to asyncio.timeout, so a float works;
    # int() would cut 1.9 s to 1 and 0.5 s to 0, which cancels in-flight requests at once.
    return uvicorn.Config(
        served.app, host=cfg.host, port=cfg.port, log_level=log_level,
        timeout_graceful_shutdown=cfg.shutdown_timeout_s,  # type: ignore[arg-type]
        server_header=False,
    )


def serve_forever(served: Served, cfg: ServeConfig) -> None:
    """Run uvicorn; Ctrl-C/SIGTERM stop accepting, let in-flight requests finish, then drain the engine."""
    import uvicorn

    uvicorn.Server(uvicorn_config(served, cfg)).run()
