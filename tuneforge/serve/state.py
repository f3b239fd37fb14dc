"""What every route shares, kept on ``app.state.serve``: the engine, the ``serve`` config, the served
model ids and the API key; plus the dependencies that read it (the state itself, the key check)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from tuneforge.serve.engine import BASE
from tuneforge.serve.errors import ApiError
from tuneforge.serve.security import key_matches

if TYPE_CHECKING:
    from tuneforge.config.serve import ServeConfig
    from tuneforge.serve.engine import Engine


@dataclass
class ServeState:
    engine: Engine
    cfg: ServeConfig
    base_id: str
    api_key: str | None
    # Names served on demand beyond the adapters given at startup (a fine-tuning job's checkpoints): the
    # adapter folder for a name, or None when the name is not one of them.
    resolve: Callable[[str], Path | None] | None = None

    @property
    def model_ids(self) -> list[str]:
        """The ids /v1/models lists: the base model first, then the adapters."""
        return [self.base_id, *self.engine.adapters]

    def add_adapter(self, name: str, folder: Path) -> None:
        """Serve a new adapter without a restart (a fine-tuning job's result); it loads on first use, like
        the adapters named at startup. Uses the engine's own method when it has one."""
        adder = getattr(self.engine, "add_adapter", None)
        if adder is not None:
            adder(name, folder)
        else:
            self.engine.adapters = {**self.engine.adapters, name: folder}  # one assignment: readers see old or new

    def adapter_for(self, model: str) -> str | None:
        """The engine's adapter key for a request's ``model`` (BASE for the base model); 404 if unknown."""
        if model == self.base_id:
            return BASE
        if model in self.engine.adapters:
            return model
        if self.resolve is not None and (folder := self.resolve(model)) is not None:
            self.add_adapter(model, folder)  # listed in /v1/models from now on, loaded on first use
            return model
        raise ApiError(404, f"model {model!r} not found; available: {', '.join(self.model_ids)}",
                       "model_not_found", "model")


async def get_state(request: Request) -> ServeState:
    """Dependency: the app's shared state (async, so FastAPI does not hop to a thread pool for it)."""
    return request.app.state.serve


State = Annotated[ServeState, Depends(get_state)]  # a route parameter of this type gets the state


async def require_key(request: Request) -> None:
    """Dependency of every route but /health: ``Authorization: Bearer <key>`` when a key is set."""
    key = request.app.state.serve.api_key
    if key is not None and not key_matches(request.headers.get("authorization"), key):
        raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", "invalid_api_key")
