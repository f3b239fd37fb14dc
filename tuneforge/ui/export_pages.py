"""The Export page: ``tuneforge export RUN`` as a background process, then its size table and checks.

The export runs as the CLI command itself (``tuneforge export RUN [--int8] [--gguf TYPE]``) in a session
of its own, so it survives the browser closing and the UI restarting, and a slow GGUF write never blocks
a request. Its output goes to ``RUNS/.ui/export/NAME.log`` and its pid and start time to ``NAME.json``.
It is *running* while that pid lives, *done* once ``<run>/export/export.json`` (the CLI's report, the
numbers the CLI prints) is newer than the start, else *failed* (the log says why). Files are written
where the CLI writes them, ``<run>/export/``, inside the runs directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.runs import tuned_weights_in
from tuneforge.ui import catalog, launch
from tuneforge.ui.web import Site

GGUF_TYPES = ("f32", "f16", "q8_0")  # as `tuneforge export --gguf` offers


def _files(runs: Path, name: str) -> tuple[Path, Path]:
    folder = runs / catalog.UI_DIR / "export"
    return folder / f"{name}.json", folder / f"{name}.log"


def start(runs: Path, folder: Path, int8: bool, gguf: str) -> dict[str, Any]:
    """Start ``tuneforge export`` for the run in ``folder``; refused while one is already running."""
    if gguf and gguf not in GGUF_TYPES:
        raise UserError(f"gguf {gguf!r}: pick one of {', '.join(GGUF_TYPES)}")
    if tuned_weights_in(folder) is None:
        raise UserError(f"run {folder.name!r}: no tuned weights (adapter/ or model/) to export")
    if state(runs, folder)["status"] == "running":
        raise UserError(f"run {folder.name!r}: an export is already running")
    argv = launch.cli("export", str(folder), *(["--int8"] if int8 else []), *(["--gguf", gguf] if gguf else []))
    record_file, log = _files(runs, folder.name)
    log.unlink(missing_ok=True)
    proc = launch.start_process(argv, log)
    record = {"pid": proc.pid, "argv": argv, "started": time.time(), "int8": int8, "gguf": gguf or None}
    atomic.write_json(record_file, record)
    return record


def report_of(folder: Path) -> dict[str, Any] | None:
    path = folder / "export" / "export.json"
    return json.loads(path.read_text()) if path.is_file() else None


def state(runs: Path, folder: Path) -> dict[str, Any]:
    """{"status": none|running|done|failed, "log": tail of the process's output}."""
    record_file, log = _files(runs, folder.name)
    if not record_file.is_file():
        return {"status": "none", "log": ""}
    record = json.loads(record_file.read_text())
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.is_file() else ""
    report = folder / "export" / "export.json"
    if catalog.pid_alive(int(record["pid"])):
        status = "running"
    elif report.is_file() and report.stat().st_mtime >= record["started"]:
        status = "done"
    else:
        status = "failed"
    return {"status": status, "log": tail, "command": " ".join(["tuneforge", *record["argv"][3:]])}


def sizes(report: dict[str, Any]) -> list[dict[str, str]]:
    """The CLI's size table (artifact, MB, share of the base) as rows."""
    table = report.get("sizes_bytes", {})
    base = table.get("base") or 1
    return [{"artifact": k, "mb": f"{v / 1e6:.2f}", "vs_base": f"{v / base:.1%}"} for k, v in table.items()]


def checks(report: dict[str, Any]) -> list[dict[str, str]]:
    """The merge check (and int8 / GGUF reload checks) as the CLI prints them."""
    rows = []
    for key, what in (("merge_check", "merged vs base+adapter"), ("int8_check", "int8 vs merged"),
                      ("gguf_check", "GGUF reloaded vs merged")):
        c = report.get(key)
        if c:
            rows.append({"check": what, "max_abs": f"{c['max_abs_diff']:.2e}",
                         "max_rel": f"{c['max_rel_diff']:.2e}" if "max_rel_diff" in c else "-",
                         "top1": f"{c['top1_agreement']:.1%}"})
    return rows


def register(app: FastAPI, site: Site) -> None:
    def exportable() -> list[str]:
        return [n for n in site.finished_runs() if tuned_weights_in(site.runs / n) is not None]

    @app.get("/export")
    def export_page(request: Request, run: str = ""):
        choices = exportable()
        run = run if run in choices else (choices[0] if choices else "")
        folder = site.folder(run) if run else None
        now = state(site.runs, folder) if folder else {"status": "none", "log": ""}
        report = report_of(folder) if folder and now["status"] == "done" else None
        return site.page(request, "export.html", run=run, choices=choices, state=now, report=report,
                         sizes=sizes(report) if report else [], checks=checks(report) if report else [],
                         gguf_types=GGUF_TYPES)

    @app.post("/export/{name}")
    def export_start(request: Request, name: str, int8: str = Form(""), gguf: str = Form(""), csrf: str = Form("")):
        site.csrf(request, csrf)
        if name not in exportable():
            raise UserError(f"run {name!r}: not a finished run with tuned weights in {site.runs}")
        start(site.runs, site.folder(name), bool(int8), gguf)
        return RedirectResponse(f"/export?run={name}", status_code=303)

    @app.get("/api/export/{name}")
    def export_state(name: str):
        return state(site.runs, site.folder(name))
