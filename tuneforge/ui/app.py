"""The `tuneforge ui` web app: server-rendered pages (Jinja2) plus one small script for live curves.

Everything ships in the package (templates/, static/): no CDN, works offline. The pages read run
folders through :mod:`tuneforge.ui.catalog` and start/stop runs through :mod:`tuneforge.ui.launch`;
both use the same Python API as the CLI.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import UserError
from tuneforge.eval.compare import fmt_metric
from tuneforge.eval.results import read_results
from tuneforge.runs import RECIPE, REPORT, TRAIN_RESULT, tuned_weights_in
from tuneforge.ui import auth, catalog, export_pages, indexes, launch, rag_pages, run_details
from tuneforge.ui.web import CrossSite, Site

HERE = Path(__file__).resolve().parent
PUBLIC = ("/login", "/static/")
# Loss curves drawn: train and validation, per task for mixtures (rows with "task", as the training loop
# and strategies/multitask log them). Not "val_final" (the kept weights' loss, after the last step).
CURVE_SPLITS = ("train", "val")


def _examples() -> dict[str, str]:
    """Example recipes shipped in the package (tuneforge/recipes/*.yaml), by file name."""
    folder = HERE.parent / "recipes"
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.yaml"))}


def create_app(runs_dir: str | Path, api_key: str | None, index_dirs: list[str | Path] = ()) -> FastAPI:
    """The app over ``runs_dir`` (and the RAG indexes in ``index_dirs``), asking for ``api_key`` (None: no login)."""
    runs = Path(runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        token = auth.csrf_token(request)
        html = env.get_template(template).render(csrf=token, auth=api_key is not None, **context)
        response = HTMLResponse(html, status_code=status_code)
        if request.cookies.get(auth.CSRF_COOKIE) != token:
            response.set_cookie(auth.CSRF_COOKIE, token, samesite="strict")
        return response

    site = Site(runs, indexes.named(list(index_dirs)), page)
    _csrf, _folder = site.csrf, site.folder

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        public = any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)
        if not public and not auth.logged_in(request, api_key):
            if path.startswith("/api/"):
                return JSONResponse({"error": "log in first"}, status_code=401)
            return RedirectResponse("/login", status_code=303)
        launch.reap()
        return await call_next(request)

    @app.get("/login")
    def login_form(request: Request):
        return page(request, "login.html", error=None)

    @app.post("/login")
    def login(request: Request, key: str = Form("")):
        if api_key is None:
            return RedirectResponse("/", status_code=303)
        if not auth.same_origin(request) or not auth.key_ok(key, api_key):
            return page(request, "login.html", status_code=401, error="wrong API key")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(auth.SESSION_COOKIE, auth.session_token(api_key), httponly=True, samesite="strict")
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")):
        _csrf(request, csrf)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE)
        return response

    @app.get("/")
    def runs_page(request: Request, status: str = "", sort: str = "started"):
        rows = catalog.list_runs(runs)
        if status in catalog.STATUSES:
            rows = [r for r in rows if r.status == status]
        if sort in ("name", "kind", "status", "model", "method", "duration", "metric", "verdict"):
            rows = sorted(rows, key=lambda r: getattr(r, sort))
        return page(request, "runs.html", rows=rows, runs_dir=str(runs), status=status, sort=sort,
                    statuses=catalog.STATUSES)

    @app.get("/runs/{name}")
    def run_page(request: Request, name: str):
        folder = _folder(name)
        summary = catalog.summarize(runs, folder) if folder.is_dir() else None
        results = read_results(folder) if folder.is_dir() else []
        table = [{"system": r.system, "task": r.task, "metrics": {k: fmt_metric(v) for k, v in r.metrics.items()}}
                 for r in results]
        verdict = catalog.verdict_of(folder) if results else None
        recipe = (folder / RECIPE).read_text(encoding="utf-8") if (folder / RECIPE).is_file() else ""
        status = summary.status if summary else catalog.status_of(folder, catalog.ui_record(runs, name))
        details = run_details.evaluation(folder, verdict) if folder.is_dir() else {}
        return page(request, "run.html", name=name, summary=summary, status=status, table=table,
                    verdict=verdict, recipe=recipe, log=catalog.log_tail(runs, folder),
                    has_report=(folder / REPORT).is_file(), **details)

    @app.get("/runs/{name}/report")
    def report(name: str):
        """The run's own report.html (the same parts as the run page, as one file), sandboxed: a run
        folder may come from anyone, so its HTML gets a unique origin and no scripts (CSP sandbox)."""
        path = _folder(name) / REPORT
        if not path.is_file():
            raise UserError(f"run {name!r}: no report.html yet (`tuneforge report RUN` writes it)")
        return HTMLResponse(path.read_text(encoding="utf-8", errors="replace"),
                            headers={"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"})

    @app.get("/api/runs/{name}/progress")
    def progress(name: str, after: int = 0):
        folder = _folder(name)
        rows = catalog.read_metrics(folder)
        curves = [{"step": r["step"], "split": r.get("split", "train"), "loss": r["loss"], "task": r.get("task")}
                  for r in rows[after:] if "loss" in r and "step" in r and r.get("split", "train") in CURVE_SPLITS]
        # The run's own progress rows; a mixture's per-task rows (with "task") are extra curves only.
        train = [r for r in rows if r.get("split") == "train" and "step" in r and "task" not in r]
        last = train[-1] if train else {}
        total = (catalog.recipe_of(folder).get("train") or {}).get("max_steps")
        status = catalog.status_of(folder, catalog.ui_record(runs, name))
        eta = None
        if status == "running" and total and len(train) >= 2:
            per_step = (train[-1]["time"] - train[0]["time"]) / max(1, train[-1]["step"] - train[0]["step"])
            eta = round(per_step * (int(total) - int(last["step"])))
        return {"next": len(rows), "points": curves, "status": status, "step": last.get("step"), "total": total,
                "loss": last.get("loss"), "tokens_per_s": last.get("tokens_per_s"), "eta_s": eta,
                "finished": (folder / TRAIN_RESULT).is_file(), "log": catalog.log_tail(runs, folder, 15)}

    @app.get("/compare")
    def compare_page(request: Request):
        names = list(dict.fromkeys(request.query_params.getlist("run")))
        if len(names) < 2:
            raise UserError("compare needs two or more runs: tick them on the Runs page")
        folders = [_folder(n) for n in names]
        table: dict[tuple[str, str, str], dict[str, str]] = {}
        for name, folder in zip(names, folders, strict=True):
            for r in read_results(folder):
                for metric, value in r.metrics.items():
                    table.setdefault((r.task, r.system, metric), {})[name] = fmt_metric(value)
        summaries = [catalog.summarize(runs, f) for f in folders if f.is_dir()]
        return page(request, "compare.html", names=names, summaries=summaries,
                    table=[(k, v) for k, v in sorted(table.items())])

    @app.get("/api/runs")
    def runs_json():
        return [asdict(r) for r in catalog.list_runs(runs)]

    @app.get("/launch")
    def launch_form(request: Request, example: str = ""):
        examples = _examples()
        text = examples.get(example, "")
        return page(request, "launch.html", text=text, problems=[], examples=list(examples))

    @app.post("/launch")
    def launch_run(request: Request, recipe: str = Form(""), csrf: str = Form("")):
        _csrf(request, csrf)
        if not recipe.strip():
            return page(request, "launch.html", status_code=422, text=recipe, examples=list(_examples()),
                        problems=["the recipe is empty: paste one or pick an example"])
        name, problems = launch.launch(runs, recipe)
        if name is None:
            return page(request, "launch.html", status_code=422, text=recipe, problems=problems,
                        examples=list(_examples()))
        return RedirectResponse(f"/runs/{name}", status_code=303)

    @app.post("/api/validate")
    async def validate_json(request: Request):
        """The Launch page checks the recipe as you type (header X-CSRF-Token, body {"recipe": text})."""
        _csrf(request, "")
        body = await request.json()
        _, problems = launch.validate(runs, str(body.get("recipe", "")) if isinstance(body, dict) else "")
        return {"problems": problems}

    @app.get("/arena")
    def arena_page(request: Request, run: str = ""):
        choices = [r.name for r in catalog.list_runs(runs, with_verdict=False)
                   if r.status == "finished" and tuned_weights_in(runs / r.name) is not None]
        return page(request, "arena.html", run=run if run in choices else (choices[0] if choices else ""),
                    choices=choices, indexes=list(site.indexes))

    @app.post("/api/arena")
    async def arena_answer(request: Request):
        """Stream one system's answer as plain text pieces (body {"run", "system", "prompt"})."""
        _csrf(request, "")
        body = await request.json()
        if not isinstance(body, dict):
            raise UserError("send a JSON object: {run, system, prompt}")
        folder = _folder(str(body.get("run", "")))
        if catalog.status_of(folder, catalog.ui_record(runs, folder.name)) == "running":
            raise UserError(f"run {folder.name!r} is still training: ask it when it has finished")
        from tuneforge.ui import arena

        system, prompt = str(body.get("system", "")), str(body.get("prompt", ""))
        if system in ("rag", "tuned_rag"):
            index = indexes.pick(site.indexes, str(body.get("index", "")))
            pieces = await run_in_threadpool(arena.answer_rag, folder, index, prompt, system == "tuned_rag")
        else:
            pieces = await run_in_threadpool(arena.answer, folder, system, prompt)
        return StreamingResponse(pieces, media_type="text/plain; charset=utf-8")

    @app.post("/runs/{name}/stop")
    def stop_run(request: Request, name: str, csrf: str = Form("")):
        _csrf(request, csrf)
        _folder(name)
        launch.stop(runs, name)
        return RedirectResponse(f"/runs/{name}", status_code=303)

    @app.post("/runs/{name}/resume")
    def resume_run(request: Request, name: str, csrf: str = Form("")):
        _csrf(request, csrf)
        _folder(name)
        launch.resume(runs, name)
        return RedirectResponse(f"/runs/{name}", status_code=303)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return page(request, "error.html", status_code=404 if "no such run" in str(exc) else 400, message=str(exc))

    @app.exception_handler(CrossSite)
    async def cross_site(request: Request, exc: CrossSite):
        return Response("cross-site request refused (missing or wrong CSRF token)", status_code=403)

    rag_pages.register(app, site)
    export_pages.register(app, site)
    return app
