"""What the UI knows about run folders: where they are, their status, and a one-line summary each.

Status comes from the folder and from process liveness, never from a flag a crashed process could
leave behind: a run is *running* while the pid named in its ``.lock`` (see :mod:`tuneforge.locks`) is a
live process; the lock file is emptied on release and a dead holder's pid is not alive, so a crashed
run never shows "running". Otherwise it is *finished* when it left its result (``train_result.json``
or ``eval/results.json``), *killed* when someone stopped it (the UI's stop request, see
:mod:`tuneforge.ui.launch`), else *failed*.

Every path the browser names goes through :func:`run_path`: one plain folder name directly inside the
runs directory, symlinks resolved, so ``../`` or a link elsewhere is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge import locks
from tuneforge.config.base import check_folder_name
from tuneforge.errors import UserError
from tuneforge.eval.compare import fmt_metric, is_probe, primary_metric
from tuneforge.eval.results import RESULTS_FILE, read_results
from tuneforge.runs import LOGS, MANIFEST, METRICS, RECIPE, TRAIN_RESULT

UI_DIR = ".ui"  # the UI's own files inside the runs directory (launched recipes, stop requests, logs)
STATUSES = ("running", "finished", "failed", "killed")


def run_path(runs_dir: Path, name: str) -> Path:
    """``runs_dir/name`` when ``name`` is one plain folder name that resolves inside ``runs_dir``."""
    try:
        check_folder_name(name)
    except ValueError as exc:
        raise UserError(f"run {name!r}: {exc}") from None
    base = runs_dir.resolve()
    path = (base / name).resolve()
    if path.parent != base or not (path.is_dir() or (base / UI_DIR / f"{name}.json").is_file()):
        raise UserError(f"run {name!r}: no such run folder in {base}")
    return path


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie, dead but not yet reaped, counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lock_holder(folder: Path) -> int | None:
    """The pid named in the folder's lock file when that process is alive, else None."""
    try:
        info = json.loads((folder / locks.LOCK_NAME).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    return pid if isinstance(pid, int) and pid_alive(pid) else None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def ui_record(runs_dir: Path, name: str) -> dict[str, Any]:
    """What the UI recorded when it launched or stopped run ``name`` (empty for runs started elsewhere)."""
    return _json(runs_dir / UI_DIR / f"{name}.json")


def status_of(folder: Path, record: dict[str, Any] | None = None) -> str:
    record = record or {}
    if lock_holder(folder) is not None or (record.get("pid") and pid_alive(int(record["pid"]))
                                           and not record.get("stopped")):
        return "running"
    if record.get("stopped"):
        return "killed"
    if (folder / TRAIN_RESULT).is_file() or (folder / RESULTS_FILE).is_file():
        return "finished"
    return "failed"


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a half-written last line (the trainer is appending) is skipped."""
    try:
        text = (folder / METRICS).read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def recipe_of(folder: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((folder / RECIPE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _time(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return _dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class RunSummary:
    name: str
    kind: str
    status: str
    model: str
    method: str
    started: str
    duration: str
    metric: str  # "accuracy 0.857 [0.77, 0.93]" (the tuned system's primary metric), or "-"
    verdict: str  # the verdict's answer ("yes", "no", ...), or "-"


def primary(folder: Path) -> str:
    rows = [r for r in read_results(folder) if not is_probe(r)]
    metric = primary_metric(rows)
    if metric is None:
        return "-"
    row = next((r for r in rows if r.system == "tuned" and metric in r.metrics), None)
    row = row or next(r for r in rows if metric in r.metrics)
    return f"{metric} {fmt_metric(row.metrics[metric])} ({row.system})"


def summarize(runs_dir: Path, folder: Path, with_verdict: bool = True) -> RunSummary:
    manifest = _json(folder / MANIFEST)
    recipe = recipe_of(folder)
    record = ui_record(runs_dir, folder.name)
    status = status_of(folder, record)
    start = _time(manifest.get("created")) or _time(record.get("started"))
    metrics = read_metrics(folder)
    end = _time(metrics[-1].get("time")) if metrics else None
    if status == "running":
        end = _dt.datetime.now().timestamp()
    verdict = "-"
    if with_verdict and (folder / RESULTS_FILE).is_file():
        verdict = verdict_of(folder).answer
    return RunSummary(
        name=folder.name,
        kind=str(manifest.get("command") or record.get("command") or "-"),
        status=status,
        model=str((recipe.get("model") or {}).get("name", "-")),
        method=str((recipe.get("train") or {}).get("method", "-")),
        started=_dt.datetime.fromtimestamp(start).strftime("%Y-%m-%d %H:%M") if start else "-",
        duration=fmt_duration(end - start if end and start else None),
        metric=primary(folder),
        verdict=verdict,
    )


# Verdicts by (folder, results.json mtime): the bootstrap behind one takes a moment, and the runs list
# asks for every run's verdict on each load.
_VERDICTS: dict[tuple[Path, int], Any] = {}


def verdict_of(folder: Path):
    """The same verdict the run's report shows (:func:`tuneforge.eval.report.run_verdict`)."""
    from tuneforge.eval.report import run_verdict

    try:
        key = (folder.resolve(), (folder / RESULTS_FILE).stat().st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _VERDICTS:
        return _VERDICTS[key]
    verdict = run_verdict(folder, read_results(folder), recipe_of(folder))
    if key is not None:
        _VERDICTS[key] = verdict
    return verdict


def list_runs(runs_dir: Path, with_verdict: bool = True) -> list[RunSummary]:
    """Every run folder directly under ``runs_dir`` (a folder with a recipe or manifest), newest first."""
    if not runs_dir.is_dir():
        return []
    folders = [p for p in runs_dir.iterdir()
               if p.is_dir() and not p.name.startswith(".") and ((p / RECIPE).is_file() or (p / MANIFEST).is_file())]
    names = {p.name for p in folders}
    # Launched from the UI but still loading (no folder yet): listed, so a fresh launch shows at once.
    pending = [runs_dir / p.stem for p in (runs_dir / UI_DIR).glob("*.json") if p.stem not in names]
    summaries = [summarize(runs_dir, p, with_verdict) for p in folders]
    for p in pending:
        record = ui_record(runs_dir, p.name)
        status = status_of(p, record) if p.is_dir() else (
            "running" if record.get("pid") and pid_alive(int(record["pid"])) and not record.get("stopped")
            else "killed" if record.get("stopped") else "failed")
        summaries.append(RunSummary(p.name, str(record.get("command", "train")), status, "-", "-",
                                    str(record.get("started", "-"))[:16].replace("T", " "), "-", "-", "-"))
    return sorted(summaries, key=lambda s: s.started, reverse=True)


def log_tail(runs_dir: Path, folder: Path, lines: int = 40) -> str:
    """The last lines of the run's log, or of the launched process's output while no log exists yet."""
    candidates = [folder / LOGS / "run.log", runs_dir / UI_DIR / f"{folder.name}.log"]
    texts = []
    for path in candidates:
        try:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    text = "\n".join(t for t in texts if t.strip())
    return "\n".join(text.splitlines()[-lines:])
