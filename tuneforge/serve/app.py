"""The HTTP API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` and ``/health``.

This module only assembles the app; read on in:

- ``routes/`` — one module per area (``completions``, ``models``, ``health``), each an ``APIRouter``;
- ``relay`` — rows through the engine, answered as JSON or as server-sent events (the OpenAI chunk
  format), capacity given back however a request ends;
- ``errors`` — the OpenAI error shape, the request id on every response, 5xx without internals;
- ``state`` — what the routes share (engine, config, ids, key), kept on ``app.state.serve``;
- ``security`` — the API key and the body-size limit.

The request's ``model`` picks the base model or one of the adapters. Every error is a 4xx/5xx in the
OpenAI error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI

from tuneforge.serve import errors
from tuneforge.serve.errors import ApiError
from tuneforge.serve.routes import ROUTERS
from tuneforge.serve.routes.files import UPLOAD_PATH
from tuneforge.serve.security import BodyLimit
from tuneforge.serve.state import ServeState

if TYPE_CHECKING:
    from tuneforge.config.serve import ServeConfig
    from tuneforge.serve.engine import Engine
    from tuneforge.serve.finetune.manager import FineTuning

__all__ = ["ApiError", "create_app"]


def create_app(engine: Engine, cfg: ServeConfig, base_id: str, api_key: str | None,
               finetune: FineTuning | None = None) -> FastAPI:
    """Build the app around a started-or-not engine (the lifespan starts and drains it, and starts and
    stops the fine-tuning manager when there is one)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        if finetune is not None:
            finetune.start()
        yield
        # uvicorn runs this after in-flight requests finished (or shutdown_timeout_s passed).
        if finetune is not None:
            await asyncio.to_thread(finetune.stop)
        await asyncio.to_thread(engine.stop, cfg.shutdown_timeout_s)

    # No /docs or /openapi.json routes: every route but /health is behind the key.
    app = FastAPI(title="tuneforge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = ServeState(engine, cfg, base_id, api_key,
                                 resolve=finetune.checkpoint_model if finetune is not None else None)
    app.state.finetune = finetune
    # Uploads have their own cap (serve.max_file_bytes), counted as they stream in (routes/files.py).
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes, exempt={("POST", UPLOAD_PATH)})
    errors.install(app)  # after BodyLimit: the request id wraps everything, 413s included
    for router in ROUTERS:
        app.include_router(router)
    return app
