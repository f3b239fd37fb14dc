"""GET /v1/models: the base model's id, then every adapter's, in the OpenAI list shape."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends

from tuneforge.serve.state import State, require_key

router = APIRouter(dependencies=[Depends(require_key)])


@router.get("/v1/models")
async def models(state: State) -> dict[str, Any]:
    now = int(time.time())
    return {"object": "list", "data": [
        {"id": m, "object": "model", "created": now, "owned_by": "tuneforge"} for m in state.model_ids
    ]}
