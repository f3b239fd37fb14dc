"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, events and checkpoints (OpenAI's shapes).

Lists are newest first with OpenAI's cursor: ``after`` is the id of the last item already seen and
``has_more`` says whether another page follows. The jobs list filters by ``metadata[k]=v`` (as the
official client sends ``jobs.list(metadata={...})``) before it pages. The work itself happens in the manager's thread and
the jobs' worker processes; these routes only read and write the jobs database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tuneforge.serve.errors import ApiError
from tuneforge.serve.finetune.manager import FineTuning
from tuneforge.serve.finetune.spec import JobRequest
from tuneforge.serve.routes.files import FT
from tuneforge.serve.state import require_key

router = APIRouter(dependencies=[Depends(require_key)])
Limit = Annotated[int, Query(ge=1, le=100)]


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


def _job(ft: FineTuning, job_id: str) -> dict[str, Any]:
    job = ft.store.job(job_id)
    if job is None:
        raise ApiError(404, f"no fine-tuning job {job_id!r}", "not_found", "fine_tuning_job_id")
    return job


@router.post("/v1/fine_tuning/jobs")
async def create_job(body: JobRequest, ft: FT) -> dict[str, Any]:
    return ft.create(body)


def metadata_filter(request: Request) -> dict[str, str] | None:
    """OpenAI's metadata filter from the query: ``metadata[k]=v`` pairs (all must match), or the literal
    ``metadata=null`` for jobs without metadata ({} here). None: no filter."""
    pairs = {key[len("metadata["):-1]: value for key, value in request.query_params.multi_items()
             if key.startswith("metadata[") and key.endswith("]")}
    plain = request.query_params.getlist("metadata")
    if plain and (plain != ["null"] or pairs):
        raise ApiError(400, "metadata: filter with metadata[key]=value query parameters, or metadata=null alone "
                       "for jobs without metadata", "invalid_metadata", "metadata")
    if len(pairs) > 16:
        raise ApiError(400, "metadata: at most 16 key-value pairs", "invalid_metadata", "metadata")
    return {} if plain else pairs or None


# FastAPI does not read OpenAI's deepObject parameter itself; declared here so the schema (and fuzzing) has it.
METADATA_PARAM = {"parameters": [{
    "name": "metadata", "in": "query", "required": False, "style": "deepObject", "explode": True,
    "description": "Only jobs with every one of these metadata pairs (metadata[k]=v).",
    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}]}


@router.get("/v1/fine_tuning/jobs", openapi_extra=METADATA_PARAM)
async def list_jobs(request: Request, ft: FT, after: str | None = None, limit: Limit = 20) -> dict[str, Any]:
    return _page(ft.store.jobs(after=after, limit=limit + 1, metadata=metadata_filter(request)), limit)


@router.get("/v1/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: str, ft: FT) -> dict[str, Any]:
    return _job(ft, job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, ft: FT) -> dict[str, Any]:
    return ft.cancel(job_id)


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
async def job_events(job_id: str, ft: FT, after: str | None = None, limit: Limit = 20) -> dict[str, Any]:
    _job(ft, job_id)
    return _page(ft.store.events(job_id, after=after, limit=limit + 1), limit)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
async def job_checkpoints(job_id: str, ft: FT, after: str | None = None, limit: Limit = 10) -> dict[str, Any]:
    _job(ft, job_id)
    items = ft.checkpoints(job_id)
    if after is not None:
        ids = [c["id"] for c in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return _page(items, limit)
