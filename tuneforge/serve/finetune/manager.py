"""The fine-tuning jobs' life: validating_files -> queued -> running -> succeeded | failed | cancelled.

One background thread (``tuneforge-finetune``) does everything that takes time, so requests only read
and write the database: it validates files, starts worker processes (``serve.max_training_jobs`` at
once, oldest job first), turns each run folder's metrics and checkpoints into events, and finishes jobs
when their worker exits. The state folder is held with a lock (``tuneforge.locks``): a second server on
the same folder is refused instead of racing the first one's jobs.

Restarts: a job still "running" in the database when the server starts was cut off by the server's own
end; it is queued again and its worker resumes from the newest checkpoint (``tuneforge train
--resume``). A worker that dies while the server lives fails its job with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge import locks
from tuneforge.config.recipe import ModelConfig, Recipe
from tuneforge.config.serve import ServeConfig
from tuneforge.runs import ADAPTER, METRICS, TRAIN_RESULT
from tuneforge.serve.errors import ApiError
from tuneforge.serve.finetune import checkpoint_models, files, progress, spec, worker
from tuneforge.serve.finetune.store import Store
from tuneforge.serve.finetune.validate import BadFile, prepare_job_data

log = logging.getLogger(__name__)
TERMINAL = ("succeeded", "failed", "cancelled")
JOBS, RUNS = "jobs", "runs"
CANCEL_GRACE_S = 30.0


class FineTuning:
    def __init__(self, cfg: ServeConfig, model: ModelConfig, base_id: str,
                 add_adapter: Callable[[str, Path], None], poll_s: float = 0.2) -> None:
        assert cfg.state_dir is not None
        self.dir = Path(cfg.state_dir).resolve()
        self.cfg, self.model, self.base_id, self.add_adapter, self.poll_s = cfg, model, base_id, add_adapter, poll_s
        self._held = contextlib.ExitStack()
        self._held.enter_context(locks.hold(self.dir, "the fine-tuning state folder (another tuneforge serve)"))
        self.store = Store(self.dir)
        self.workers: dict[str, worker.Worker] = {}
        self.tails: dict[str, progress.Tail] = {}
        self._cancel: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tokenizer = None

    # -- lifecycle -------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Jobs the last server left "running": resumed when their run folder has something to resume
        from, failed with the reason when it has not (never left running with no worker)."""
        for job in self.store.jobs(status=("running",)):
            run = self.run_path(job["id"])
            if progress.checkpoints(run) or (run / TRAIN_RESULT).is_file():
                self.store.update_job(job["id"], status="queued")
                self.store.add_event(job["id"], "The server restarted: the job resumes from its newest checkpoint")
                continue
            every = self.store.spec(job["id"])["extras"].get("save_every")
            reason = (f"the server stopped before the job's first checkpoint (one is written every {every} steps, "
                      "tuneforge.save_every), so there is nothing to resume from; create the job again")
            self._end(job["id"], "failed", reason, level="error",
                      error={"code": "training_interrupted", "message": reason, "param": None})
        for job in self.store.jobs(status=("succeeded",)):
            self._serve_result(job)

    def start(self) -> None:
        self._recover()
        self._thread = threading.Thread(target=self._run, name="tuneforge-finetune", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; running workers are stopped too and their jobs resume at the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for w in self.workers.values():
            w.cancel()
        for w in self.workers.values():
            with contextlib.suppress(Exception):
                w.process.wait(CANCEL_GRACE_S)
            w.kill()
        self.store.close()
        self._held.close()

    def run_path(self, job_id: str) -> Path:
        return self.dir / RUNS / job_id

    def job_dir(self, job_id: str) -> Path:
        return self.dir / JOBS / job_id

    # -- requests --------------------------------------------------------------------------------

    def create(self, req: spec.JobRequest) -> dict[str, Any]:
        hyper = spec.check(req)
        if req.model != self.base_id:
            raise ApiError(404, f"model {req.model!r}: this server fine-tunes its base model {self.base_id!r} only",
                           "model_not_found", "model")
        for param in ("training_file", "validation_file"):
            file_id = getattr(req, param)
            if file_id is None:
                continue
            found = self.store.file(file_id)
            if found is None or found["purpose"] != "fine-tune":
                raise ApiError(400, f"{param}: no file {file_id!r} with purpose fine-tune", "invalid_file", param)
        job_id = files.new_id("ftjob")
        seed = req.seed if req.seed is not None else random.randrange(2**31)
        hp = hyper.model_dump()
        body = {
            "id": job_id, "object": "fine_tuning.job", "created_at": int(time.time()), "finished_at": None,
            "model": req.model, "fine_tuned_model": None, "organization_id": "tuneforge", "status": "validating_files",
            "hyperparameters": hp, "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
            "training_file": req.training_file, "validation_file": req.validation_file, "result_files": [],
            "trained_tokens": None, "error": None, "seed": seed, "suffix": req.suffix, "metadata": req.metadata,
            "estimated_finish": None, "integrations": [], "user_provided_suffix": req.suffix,
        }
        extras = req.tuneforge or spec.Extras()
        self.store.add_job(body, {"hyper": hp, "extras": extras.model_dump()})
        self.store.add_event(job_id, f"Created fine-tuning job: {job_id}")
        self.store.add_event(job_id, f"Validating training file: {req.training_file}"
                             + (f" and validation file: {req.validation_file}" if req.validation_file else ""))
        return body

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.store.job(job_id)
        if job is None:
            raise ApiError(404, f"no fine-tuning job {job_id!r}", "not_found", "fine_tuning_job_id")
        if job["status"] in TERMINAL:
            raise ApiError(400, f"job {job_id} is already {job['status']}", "invalid_state", "fine_tuning_job_id")
        self._cancel.add(job_id)
        if job_id in self.workers:
            self.workers[job_id].cancel()
            self.store.add_event(job_id, "Cancelling: the training process stops within one step; "
                                 "its checkpoints are kept")
            return job
        return self._end(job_id, "cancelled", "Job cancelled")

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        job = self.store.job(job_id)
        assert job is not None
        metrics = progress.step_metrics(self.run_path(job_id))
        name = spec.fine_tuned_name(self.base_id, job["suffix"], job_id)
        out = []
        for step, folder in reversed(progress.checkpoints(self.run_path(job_id))):
            m = metrics.get(step, {})
            out.append({
                "id": f"ftckpt-{job_id.removeprefix('ftjob-')}-{step}", "object": "fine_tuning.job.checkpoint",
                "created_at": int(folder.stat().st_mtime), "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{step}",
                "fine_tuning_job_id": job_id, "step_number": step,
                "metrics": {"step": step, "train_loss": m.get("train_loss"), "valid_loss": m.get("valid_loss")},
            })
        return out

    def checkpoint_model(self, name: str) -> Path | None:
        """The adapter folder answering a checkpoint model name (``...:ckpt-step-N``), made on first use;
        None when the name is no checkpoint of a succeeded job of this server."""
        parsed = checkpoint_models.parse(name)
        if parsed is None:
            return None
        model, job_id, step = parsed
        job = self.store.job(job_id)
        if job is None or job["fine_tuned_model"] != model:
            return None
        return checkpoint_models.adapter_folder(job, self.run_path(job_id), self.job_dir(job_id), step)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # one bad job must not stop every other job's progress
                log.exception("fine-tuning manager step failed")
            self._stop.wait(self.poll_s)

    def _tick(self) -> None:
        for job_id in self.store.oldest_first("validating_files"):
            if self._stop.is_set():
                return
            try:
                self._validate(job_id)
            except Exception:  # a bug, not the user's file: fail this job (logged) rather than retry forever
                log.exception("validating job %s failed", job_id)
                message = "validating the files failed unexpectedly; the server log has the details"
                self._end(job_id, "failed", message, level="error",
                          error={"code": "server_error", "message": message, "param": None})
        for job_id, w in list(self.workers.items()):
            self._report(job_id)
            if w.exit_code is not None:
                self._finished(job_id, w)
            elif w.cancel_at is not None and time.monotonic() - w.cancel_at > CANCEL_GRACE_S:
                w.kill()
        for job_id in self.store.oldest_first("queued"):
            if len(self.workers) >= self.cfg.max_training_jobs:
                break
            self._start(job_id)

    def _validate(self, job_id: str) -> None:
        job = self.store.job(job_id)
        assert job is not None
        sp = self.store.spec(job_id)
        extras = spec.Extras(**sp["extras"])
        if self._tokenizer is None:
            from tuneforge.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model.name, self.model.trust_remote_code)

        def source(param: str) -> tuple[Path, str] | None:
            file_id = job[param]
            if file_id is None:
                return None
            meta = self.store.file(file_id)
            if meta is None:
                raise BadFile(f"{param}: the file {file_id} was deleted", param)
            return files.path_of(self.dir, file_id), meta["filename"]

        try:
            train = source("training_file")
            assert train is not None
            prepared = prepare_job_data(self.job_dir(job_id), self._tokenizer, extras.max_length, job["seed"],
                                        train, source("validation_file"))
        except BadFile as bad:
            self._end(job_id, "failed", bad.message, level="error",
                      error={"code": "invalid_training_file" if bad.param == "training_file"
                             else "invalid_validation_file", "message": bad.message, "param": bad.param})
            return
        for note in prepared.notes:
            self.store.add_event(job_id, f"Data check: {note}", level="warn")
        hyper = spec.resolve(spec.Hyper(**sp["hyper"]), prepared.counts["train"])
        recipe = Recipe.model_validate(spec.recipe(
            self.model.name, self.cfg.training_device, job_id, str(self.dir / RUNS), str(prepared.folder),
            job["seed"], hyper, extras, has_test=prepared.counts.get("test", 0) > 0))
        from tuneforge.atomic import write_text
        from tuneforge.config.loader import dump_recipe

        write_text(self.job_dir(job_id) / "recipe.yaml", dump_recipe(recipe))
        if self.store.job(job_id)["status"] != "validating_files":  # cancelled meanwhile
            return
        method = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
        self.store.update_job(job_id, status="queued", hyperparameters=hyper, method=method)
        counts = ", ".join(f"{n} {s}" for s, n in prepared.counts.items())
        self.store.add_event(job_id, f"Files validated ({counts} examples), moving job to queued state")

    def _start(self, job_id: str) -> None:
        if job_id in self._cancel:  # cancelled between the listing and now
            return
        resume = self.run_path(job_id).is_dir()
        attempt = self.store.count_attempt(job_id)
        self.workers[job_id] = worker.start(job_id, self.job_dir(job_id) / "recipe.yaml", self.job_dir(job_id), resume)
        self.tails[job_id] = self._tail(job_id, resume)
        self.store.update_job(job_id, status="running")
        self.store.add_event(job_id, "Fine-tuning job started" + (f" (attempt {attempt}, resuming)" if resume else ""))

    def _tail(self, job_id: str, resume: bool) -> progress.Tail:
        """A reader of the run's metrics; when resuming, it starts past what the earlier attempts
        reported, so the events list each step and checkpoint once."""
        tail = progress.Tail(self.run_path(job_id) / METRICS)
        if resume:
            for event in self.store.events(job_id):
                step = event["data"].get("step")
                if event["type"] == "metrics" and isinstance(step, int):
                    split = "train" if "train_loss" in event["data"] else "val"
                    tail.reported[split] = max(step, tail.reported.get(split, -1))
            tail.checkpoints.update(folder.name for _, folder in progress.checkpoints(self.run_path(job_id)))
        return tail

    def _report(self, job_id: str) -> None:
        tail = self.tails[job_id]
        for row in tail.new_rows():
            message, data = progress.metric_event(row)
            self.store.add_event(job_id, message, data=data, kind="metrics")
        for step, folder in progress.checkpoints(self.run_path(job_id)):
            if folder.name not in tail.checkpoints:
                tail.checkpoints.add(folder.name)
                self.store.add_event(job_id, f"Checkpoint created at step {step}", data={"step": step})

    def _finished(self, job_id: str, w: worker.Worker) -> None:
        del self.workers[job_id]
        self.tails.pop(job_id, None)
        if job_id in self._cancel:
            self._end(job_id, "cancelled", "Job cancelled; its checkpoints are kept")
        elif w.exit_code == 0 and (self.run_path(job_id) / TRAIN_RESULT).is_file():
            self._succeeded(job_id)
        else:
            reason = worker.failure_reason(w)
            self._end(job_id, "failed", reason, level="error",
                      error={"code": "training_failed", "message": reason, "param": None})

    def _succeeded(self, job_id: str) -> None:
        import json

        run = self.run_path(job_id)
        result = json.loads((run / TRAIN_RESULT).read_text(encoding="utf-8"))
        csv_file = files.write_bytes(self.dir, progress.result_csv(run), "step_metrics.csv", "fine-tune-results")
        self.store.add_file(csv_file)
        verdict = progress.verdict(run)
        if verdict is not None:
            self.store.add_event(job_id, verdict[0], data=verdict[1])
        job = self.store.update_job(job_id, result_files=[csv_file["id"]], trained_tokens=result.get("train_tokens"))
        name = self._serve_result(job)
        self.store.add_event(job_id, f"New fine-tuned model created: {name}" if name else
                             f"Full fine-tuning finished: the model is runs/{job_id}/model in the server's state "
                             "folder (serve it with `tuneforge serve --model` that folder)")
        self._end(job_id, "succeeded", "The job has successfully completed", fine_tuned_model=name)

    def _serve_result(self, job: dict[str, Any]) -> str | None:
        """Register a succeeded job's adapter with the engine (it loads on first use); its model id."""
        adapter = self.run_path(job["id"]) / ADAPTER
        if not (adapter / "adapter_config.json").is_file():
            return None
        name = spec.fine_tuned_name(self.base_id, job["suffix"], job["id"])
        self.add_adapter(name, adapter)
        return name

    def _end(self, job_id: str, status: str, message: str, level: str = "info", **changes: Any) -> dict[str, Any]:
        """Finish a job once: a job cancelled while its files were checked stays cancelled."""
        self._cancel.discard(job_id)
        current = self.store.job(job_id)
        if current is not None and current["status"] in TERMINAL:
            return current
        job = self.store.update_job(job_id, status=status, finished_at=int(time.time()), **changes)
        self.store.add_event(job_id, message, level=level)
        return job
