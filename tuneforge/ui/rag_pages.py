"""The RAG page: an index's documents, delete one, ask with the retrieved sources and citations shown.

Only the indexes given to ``tuneforge ui --index DIR`` are reachable (by short name, see
:mod:`tuneforge.ui.indexes`); the answer comes from :func:`tuneforge.rag.pipeline.ask`, as for
``tuneforge rag ask``, with the base model of a finished run picked on the page (or retrieval only).
"""

from __future__ import annotations

from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import UserError
from tuneforge.rag.answer import RagAnswer
from tuneforge.runs import open_run
from tuneforge.ui import indexes
from tuneforge.ui.web import Site


def _ask(site: Site, index: indexes.Index, run: str, question: str) -> RagAnswer:
    """Answer with ``run``'s base model over ``index`` (no run: retrieval only); the CLI's ``ask``."""
    if run:
        recipe = indexes.recipe_for(open_run(site.folder(run)).recipe, index)
    else:
        from tuneforge.config.recipe import Recipe

        recipe = Recipe().model_copy(update={"rag": indexes.config(index)})
    from tuneforge.ui import arena

    items = arena.ask_base(recipe, question) if run else indexes.stream_ask(recipe, question, generate=False)
    result = None
    for item in items:
        if isinstance(item, RagAnswer):
            result = item
    assert result is not None
    return result


def register(app: FastAPI, site: Site) -> None:
    def show(request: Request, name: str, status_code: int = 200, **context):
        if not site.indexes:
            return site.page(request, "rag.html", status_code=status_code, index=None, names=[], docs=[],
                             runs=[], run="", **context)
        index = indexes.pick(site.indexes, name or next(iter(site.indexes)))
        docs = sorted(indexes.documents(index).values(), key=lambda d: d.doc_id)
        runs = site.finished_runs()
        context.setdefault("run", runs[0] if runs else "")
        return site.page(request, "rag.html", status_code=status_code, index=index, names=list(site.indexes),
                         docs=docs, runs=runs, **context)

    @app.get("/rag")
    def rag_page(request: Request, index: str = ""):
        return show(request, index)

    @app.post("/rag/{name}/delete")
    def rag_delete(request: Request, name: str, doc_id: str = Form(""), csrf: str = Form("")):
        site.csrf(request, csrf)
        index = indexes.pick(site.indexes, name)
        chunks = indexes.delete(index, doc_id)
        return show(request, name, deleted=f"deleted {doc_id} ({chunks} chunks)")

    @app.post("/rag/{name}/ask")
    async def rag_ask(request: Request, name: str, question: str = Form(""), run: str = Form(""),
                      csrf: str = Form("")):
        site.csrf(request, csrf)
        index = indexes.pick(site.indexes, name)
        if run and run not in site.finished_runs():
            raise UserError(f"run {run!r}: not a finished run in {site.runs}")
        result = await run_in_threadpool(_ask, site, index, run, question)
        return show(request, name, question=question, run=run, answer=result,
                    sources=indexes.sources(result))

    @app.get("/rag/")
    def rag_slash():
        return RedirectResponse("/rag", status_code=303)
