"""GET /health: open (no key), for load balancers and supervisors.

200 while the generation thread runs; 503 once it has died (or before it started), so a supervisor
restarts a server that would otherwise accept requests and never answer them.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tuneforge.serve.state import State

router = APIRouter()


@router.get("/health")
async def health(state: State) -> JSONResponse:
    if state.engine.alive():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unhealthy", "reason": "the generation thread is not running"}, 503)
