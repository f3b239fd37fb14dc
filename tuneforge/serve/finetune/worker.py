"""One training process per job: ``tuneforge train <recipe> [--resume]`` on the job's run folder.

A separate process, never the server's threads: training holds the GIL, gigabytes and the GPU for
minutes, and a crash in it must not take the server down. The job is then an ordinary run folder
(``tuneforge report``, ``compare`` and ``ui`` see it), and resuming after a server restart is the
CLI's own ``--resume`` from the newest complete checkpoint.

Cancel sends SIGINT: the CLI stops at once (``KeyboardInterrupt``), inside the current optimizer step,
and the checkpoints already written stay (they are written atomically). The worker asks the kernel for
SIGTERM when the server dies (``PR_SET_PDEATHSIG``), so a killed server leaves no orphan holding the
run folder's lock when it starts again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.interrupt import TAKE_SIGINT_ENV

LOG_NAME = "worker.log"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):  # not Linux: a killed server may leave the worker running
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Worker:
    job_id: str
    process: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)
    cancel_at: float | None = None  # when a cancel was asked (SIGKILL follows after a grace period)

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def cancel(self) -> None:
        if self.cancel_at is None and self.exit_code is None:
            self.cancel_at = time.monotonic()
            self.process.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.exit_code is None:
            self.process.kill()
        self.process.wait()


def start(job_id: str, recipe_path: Path, log_dir: Path, resume: bool) -> Worker:
    """Start ``tuneforge train`` for a job; its output goes to ``log_dir/worker.log`` (appended)."""
    cmd = [sys.executable, "-m", "tuneforge.cli.main", "train", str(recipe_path)]
    if resume:
        cmd.append("--resume")
    log = log_dir / LOG_NAME
    # TAKE_SIGINT_ENV: Cancel's SIGINT works even where the server inherited an ignored SIGINT (`nohup ... &`)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", TAKE_SIGINT_ENV: "1"}
    root = str(Path(__file__).resolve().parents[3])  # this checkout's tuneforge, whatever the cwd
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    with open(log, "ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    return Worker(job_id, process, log)


def failure_reason(worker: Worker) -> str:
    """Why a worker ended badly, in one line: the CLI's own error line when it printed one."""
    code = worker.exit_code
    tail = _last_lines(worker.log)
    said = next((line for line in reversed(tail) if line and not line.startswith((" ", "Traceback"))), "")
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"the training process was killed by {name}" + (f" (last output: {said})" if said else "")
    return f"the training process exited with code {code}" + (f": {said}" if said else "")


def _last_lines(path: Path, size: int = 4096) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines()]
