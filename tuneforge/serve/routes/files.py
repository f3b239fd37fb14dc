"""/v1/files: upload (multipart, ``purpose=fine-tune``), list, retrieve, content, delete.

The upload is parsed as it streams in, counting bytes against ``serve.max_file_bytes`` (the general
``serve.max_body_bytes`` cap does not apply to this one route), and the file is stored under a random id.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from tuneforge.serve.errors import ApiError
from tuneforge.serve.finetune import files
from tuneforge.serve.finetune.manager import FineTuning
from tuneforge.serve.state import require_key

router = APIRouter(dependencies=[Depends(require_key)])
UPLOAD_PATH = "/v1/files"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file's own bytes


async def get_finetune(request: Request) -> FineTuning:
    ft = getattr(request.app.state, "finetune", None)
    if ft is None:
        raise ApiError(404, "the fine-tuning API is off on this server: start it with a state folder "
                       "(serve.state_dir, `tuneforge serve --state-dir DIR`)", "fine_tuning_disabled")
    return ft


FT = Annotated[FineTuning, Depends(get_finetune)]


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the file is larger than the server's limit of {limit} bytes (serve.max_file_bytes)",
                    "file_too_large", "file")


@router.post(UPLOAD_PATH)
async def upload(request: Request, ft: FT) -> dict[str, Any]:
    limit = ft.cfg.max_file_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise _too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send the file as multipart/form-data with fields `file` and `purpose`",
                       "invalid_request", "file")

    async def limited():
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + MULTIPART_SLACK:
                raise _too_large(limit)
            yield chunk

    try:
        form = await MultiPartParser(request.headers, limited(), max_files=1, max_fields=8).parse()
    except MultiPartException as exc:
        raise ApiError(400, f"malformed multipart body: {exc.message}", "invalid_request", "file") from None
    try:
        purpose, upload_file = form.get("purpose"), form.get("file")
        if purpose != "fine-tune":
            raise ApiError(400, f"purpose must be 'fine-tune' (got {purpose!r})", "invalid_purpose", "purpose")
        if not isinstance(upload_file, UploadFile):
            raise ApiError(400, "no `file` part in the upload", "invalid_request", "file")
        try:
            body = await asyncio.to_thread(files.save, ft.dir, upload_file.file, limit, upload_file.filename, purpose)
        except files.TooLarge:
            raise _too_large(limit) from None
    finally:
        await form.close()
    ft.store.add_file(body)
    return body


@router.get("/v1/files")
async def list_files(ft: FT, purpose: str | None = None) -> dict[str, Any]:
    data = [f for f in ft.store.files() if purpose is None or f["purpose"] == purpose]
    return {"object": "list", "data": data, "has_more": False}


def _file(ft: FineTuning, file_id: str) -> dict[str, Any]:
    found = ft.store.file(file_id) if files.valid_id(file_id) else None
    if found is None:
        raise ApiError(404, f"no file {file_id!r}", "not_found", "file_id")
    return found


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, ft: FT) -> dict[str, Any]:
    return _file(ft, file_id)


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, ft: FT) -> FileResponse:
    meta = _file(ft, file_id)
    kind = "text/csv" if meta["filename"].endswith(".csv") else "application/octet-stream"
    return FileResponse(files.path_of(ft.dir, file_id), media_type=kind)


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, ft: FT) -> dict[str, Any]:
    _file(ft, file_id)
    ft.store.delete_file(file_id)
    files.path_of(ft.dir, file_id).unlink(missing_ok=True)
    return {"id": file_id, "object": "file", "deleted": True}
