"""The fine-tuning API across a crash of the whole server: real `tuneforge serve` processes, SIGKILLed.

Nothing here depends on how fast the machine is: every wait polls with a generous bound and fails with
what it saw instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serve.conftest import API_KEY, free_port
from tests.serve.test_fine_tuning import (
    FAST,
    adapter_tensors,
    all_events,
    chat_rows,
    upload,
    wait,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str
    log: Path

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)

    def kill9(self) -> None:
        """SIGKILL the server only: its training worker must not outlive it (and hold the run folder)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(60)

    def reap(self) -> None:
        """After the test: whatever is left of the process group (nothing, when all went well)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill9()


def serve_command(model_dir: Path, state: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "tuneforge.cli.main", "serve", "--model", str(model_dir), "--served-name", "tiny",
            "--port", str(port), "--state-dir", str(state), "--device", "cpu",
            "--set", "serve.training_device=cpu"]


def spawn(model_dir: Path, state: Path, log: Path, step_sleep: float) -> subprocess.Popen:
    env = {**os.environ, "TUNEFORGE_API_KEY": API_KEY, "TUNEFORGE_DEBUG_STEP_SLEEP": str(step_sleep),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    port = free_port()
    with open(log, "ab") as out:
        process = subprocess.Popen(serve_command(model_dir, state, port), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, cwd=state.parent, start_new_session=True)
    process.port = port  # type: ignore[attr-defined]
    return process


def start_process(model_dir: Path, state: Path, log: Path, step_sleep: float = 0.0) -> ServerProcess:
    """`tuneforge serve` in its own process (and process group); returns once /health answers."""
    import httpx

    process = spawn(model_dir, state, log, step_sleep)
    url = f"http://127.0.0.1:{process.port}"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 300  # a bound for a loaded machine, not a speed requirement
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return ServerProcess(process, url, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError(f"the server did not answer /health: {log.read_text()[-2000:]}")


@pytest.fixture()
def launch(tiny_model_dir, tmp_path):
    """start_process on the tiny model and one state folder; every process group is reaped afterwards."""
    started: list[ServerProcess] = []

    def launch(step_sleep: float = 0.0) -> ServerProcess:
        started.append(start_process(tiny_model_dir, tmp_path / "state", tmp_path / "server.log", step_sleep))
        return started[-1]

    yield launch
    for server in started:
        server.stop()
        server.reap()


def wait_for_checkpoint(client, job_id: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.fine_tuning.jobs.checkpoints.list(job_id).data:
            return
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status in ("validating_files", "queued", "running"), (job.status, job.error)
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of {job_id} appeared")


def test_kill_9_mid_job_then_restart_resumes_to_the_same_weights(launch, tiny_model_dir, tmp_path):
    """SIGKILL of the server (and its worker) after a checkpoint: a new server on the same --state-dir
    resumes the job from that checkpoint, it succeeds, and its adapter equals an uninterrupted run's.
    While the first server lives, a second server process on the folder is refused."""
    import torch

    state = tmp_path / "state"
    settings = {"model": "tiny", "seed": 11, "hyperparameters": {"n_epochs": 1, "batch_size": 2},
                "extra_body": {"tuneforge": {**FAST, "max_steps": 8, "save_every": 1}}}
    first = launch(step_sleep=1.5)  # slow steps: killed mid-job
    try:
        refused = subprocess.run(serve_command(tiny_model_dir, state, free_port()), capture_output=True, text=True,
                                 env={**os.environ, "TUNEFORGE_API_KEY": API_KEY}, timeout=300, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert f"the fine-tuning state folder (another tuneforge serve) is in use by pid {first.process.pid} " \
            in refused.stderr
        assert "Traceback" not in refused.stderr

        client = first.client()
        train = upload(client, write_jsonl(tmp_path / "t.jsonl", chat_rows(16)))
        job = client.fine_tuning.jobs.create(training_file=train.id, **settings)
        wait_for_checkpoint(client, job.id)
    finally:
        first.kill9()
    run = state / "runs" / job.id
    assert not (run / "train_result.json").exists(), "the job finished before the kill: nothing was tested"

    second = launch()
    try:
        client = second.client()
        done = wait(client, job.id, timeout_s=600)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in all_events(client, job.id)]
        assert "The server restarted: the job resumes from its newest checkpoint" in messages
        assert "resumed from step" in (state / "jobs" / job.id / "worker.log").read_text(encoding="utf-8")
        steps = [m for m in messages if m.startswith("Step ") and "training loss" in m]
        assert len(steps) == len(set(steps)) == 8, steps  # each step reported once across both servers
        straight = wait(client, client.fine_tuning.jobs.create(training_file=train.id, **settings).id,
                        timeout_s=600)
        assert straight.status == "succeeded", straight.error
    finally:
        second.stop()
    resumed, uninterrupted = adapter_tensors(run), adapter_tensors(state / "runs" / straight.id)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_kill_9_before_the_first_checkpoint_fails_the_job_with_the_reason(launch, tmp_path):
    """Nothing to resume from: the restarted server fails the job and says why, never leaves it running."""
    first = launch(step_sleep=30)  # the first step outlasts the test
    try:
        client = first.client()
        train = upload(client, write_jsonl(tmp_path / "t.jsonl", chat_rows(8)))
        job = client.fine_tuning.jobs.create(model="tiny", training_file=train.id,
                                             extra_body={"tuneforge": {**FAST, "save_every": 2}})
        wait(client, job.id, states=("running",))
    finally:
        first.kill9()

    second = launch()
    try:
        done = second.client().fine_tuning.jobs.retrieve(job.id)
    finally:
        second.stop()
    assert done.status == "failed"
    assert done.error.code == "training_interrupted"
    assert "stopped before the job's first checkpoint" in done.error.message
    assert "create the job again" in done.error.message
