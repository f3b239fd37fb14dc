"""The OpenAI fine-tuning API with the official client, end to end on the tiny model: upload, create,
poll, events, checkpoints, chat with the result; bad files, cancel, refused methods, one server per
state folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.serve.conftest import API_KEY, start_server

FAST = {"max_steps": 4, "save_every": 2, "evaluate": False, "lora_r": 4, "max_length": 128}


def chat_rows(n: int) -> list[dict]:
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    return [{"messages": [{"role": "user", "content": f"Name colour number {i}."},
                          {"role": "assistant", "content": f"Colour {i} is {colours[i % 8]}."}]}
            for i in range(n)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ft_server(tiny_model_dir, tmp_path_factory):
    state = tmp_path_factory.mktemp("ft-state")
    running = start_server(tiny_model_dir, state_dir=str(state), training_device="cpu")
    yield running, state
    running.stop()


@pytest.fixture()
def client(ft_server):
    from openai import OpenAI

    return OpenAI(base_url=ft_server[0].url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def upload(client, path: Path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


def wait(client, job_id: str, states=("succeeded", "failed", "cancelled"), timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s  # a bound, not a speed threshold: fail instead of hanging
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in states:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job.status}")


def all_events(client, job_id: str) -> list:
    events, after = [], None
    while True:
        page = client.fine_tuning.jobs.list_events(job_id, limit=5, **({"after": after} if after else {}))
        events += page.data
        if not page.has_more:
            return events
        after = page.data[-1].id


def test_upload_train_poll_events_checkpoints_and_chat(client, ft_server, tmp_path):
    train = upload(client, write_jsonl(tmp_path / "train.jsonl", chat_rows(24)))
    val = upload(client, write_jsonl(tmp_path / "val.jsonl", chat_rows(4)))
    assert train.filename == "train.jsonl" and train.purpose == "fine-tune" and train.bytes > 0
    assert client.files.retrieve(train.id).id == train.id
    assert client.files.content(train.id).content == (tmp_path / "train.jsonl").read_bytes()
    assert {f.id for f in client.files.list().data} >= {train.id, val.id}

    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=train.id, validation_file=val.id, suffix="colours", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4,
                                                                         "learning_rate_multiplier": 5}}},
        extra_body={"tuneforge": {**FAST, "evaluate": True, "forgetting": False, "eval_examples": 2}})
    assert job.status == "validating_files"
    done = wait(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:colours:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.hyperparameters.batch_size == 4 and done.hyperparameters.n_epochs == 1

    events = all_events(client, job.id)[::-1]  # the API lists newest first
    messages = [e.message for e in events]
    order = ["Created fine-tuning job", "Validating training file", "Files validated", "Fine-tuning job started",
             "Step 1: training loss", "Checkpoint created at step 2", "Evaluation verdict:",
             "New fine-tuned model created",
             "The job has successfully completed"]
    positions = [next(i for i, m in enumerate(messages) if m.startswith(o)) for o in order]
    assert positions == sorted(positions), messages
    assert [e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data] == [1, 2, 3, 4]

    verdict = next(e for e in events if e.message.startswith("Evaluation verdict:"))
    assert verdict.data["answer"] and any("tuned" in line for line in verdict.data["lines"])
    run = ft_server[1] / "runs" / job.id  # a normal run folder: report, compare and ui read it
    assert (run / "report.html").is_file() and (run / "eval" / "results.json").is_file()

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [2]  # step 4 is the last: its weights are the model itself
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-2"

    csv = client.files.content(done.result_files[0]).text.splitlines()
    assert csv[0].startswith("step,train_loss,valid_loss") and len(csv) == 1 + 5  # steps 0 (val) to 4

    assert done.fine_tuned_model in [m.id for m in client.models.list().data]
    answer = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                            messages=[{"role": "user", "content": "Name colour number 3."}])
    assert answer.choices[0].message.content is not None
    assert answer.model == done.fine_tuned_model
    chat_with_checkpoint(client, run, checkpoints[0].fine_tuned_model_checkpoint)


def chat_with_checkpoint(client, run: Path, name: str) -> None:
    """A checkpoint's name answers chat, served from exactly that checkpoint's weights; other steps 404."""
    import openai
    import torch
    from safetensors.torch import load_file

    answer = client.chat.completions.create(model=name, max_tokens=4,
                                            messages=[{"role": "user", "content": "Name colour number 3."}])
    assert answer.model == name and answer.choices[0].message.content is not None
    assert name in [m.id for m in client.models.list().data]
    step = int(name.rsplit("-", 1)[1])
    served = load_file(str(run.parent.parent / "jobs" / run.name / "checkpoint-models" / f"step-{step}"
                           / "adapter_model.safetensors"))
    trained = load_file(str(run / "checkpoints" / f"checkpoint-{step:06d}" / "trainable.safetensors"))
    assert sorted(served) == sorted(k.replace(".default.", ".") for k in trained)
    assert all(torch.equal(served[k.replace(".default.", ".")], v) for k, v in trained.items())
    final = adapter_tensors(run)
    assert any(not torch.equal(served[k], final[k]) for k in final)  # an earlier model, not the final one
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model=name.replace(f"ckpt-step-{step}", "ckpt-step-3"), max_tokens=2,
                                       messages=[{"role": "user", "content": "hi"}])


def test_malformed_file_fails_with_line_numbers(client, tmp_path):
    rows = [*chat_rows(3), "{not json", {"messages": [{"role": "user", "content": "hi"}]}, *chat_rows(2)]
    bad = upload(client, write_jsonl(tmp_path / "broken.jsonl", rows))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=bad.id, extra_body={"tuneforge": FAST})
    done = wait(client, job.id)
    assert done.status == "failed"
    assert done.error.code == "invalid_training_file" and done.error.param == "training_file"
    assert "broken.jsonl:4: (record): invalid JSON" in done.error.message
    assert "broken.jsonl:5: messages: the conversation must end with an assistant message" in done.error.message
    assert "/" not in done.error.message.split("broken.jsonl")[0]  # the server's paths stay inside


def test_unsupported_method_and_unknown_model_are_refused(client, tmp_path):
    import openai

    train = upload(client, write_jsonl(tmp_path / "t.jsonl", chat_rows(8)))
    for kind in ("dpo", "reinforcement"):
        with pytest.raises(openai.BadRequestError, match=f"method.type '{kind}' is not supported"):
            client.fine_tuning.jobs.create(model="tiny", training_file=train.id, method={"type": kind})
    with pytest.raises(openai.NotFoundError, match="fine-tunes its base model 'tiny' only"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id)
    with pytest.raises(openai.BadRequestError, match="no file 'file-0000' with purpose fine-tune"):
        client.fine_tuning.jobs.create(model="tiny", training_file="file-0000")
    with pytest.raises(openai.BadRequestError, match="purpose must be 'fine-tune'"), open(tmp_path / "t.jsonl", "rb") as f:
        client.files.create(file=f, purpose="assistants")


def test_cancel_stops_training_and_keeps_checkpoints(client, ft_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_DEBUG_STEP_SLEEP", "0.5")  # inherited by the worker: steps take long enough
    train = upload(client, write_jsonl(tmp_path / "t.jsonl", chat_rows(16)))
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=train.id, hyperparameters={"n_epochs": 1, "batch_size": 1},
        extra_body={"tuneforge": {**FAST, "max_steps": 200, "save_every": 1}})
    wait(client, job.id, states=("running",))
    deadline = time.monotonic() + 120
    while not client.fine_tuning.jobs.checkpoints.list(job.id).data and time.monotonic() < deadline:
        time.sleep(0.2)
    client.fine_tuning.jobs.cancel(job.id)
    done = wait(client, job.id)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    kept = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert kept and max(c.step_number for c in kept) < 200
    run = ft_server[1] / "runs" / job.id
    assert not (run / "train_result.json").exists()  # stopped, not finished


def test_jobs_list_pages_newest_first(client, tmp_path):
    import openai

    train = upload(client, write_jsonl(tmp_path / "t.jsonl", ["{broken"]))
    auto = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    ids = [client.fine_tuning.jobs.create(model="tiny", training_file=train.id, hyperparameters=auto).id
           for _ in range(3)]
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == ids[::-1][:2] and first.has_more
    second = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == ids[0]
    for job_id in ids:
        assert wait(client, job_id).status == "failed"
    with pytest.raises(openai.BadRequestError, match="already failed"):
        client.fine_tuning.jobs.cancel(ids[0])
    deleted = client.files.delete(train.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(train.id)


def test_jobs_list_filters_by_metadata_then_pages(client, tmp_path):
    """jobs.list(metadata={...}) (sent as metadata[k]=v) keeps only jobs with every pair; pages of the
    filtered list still follow after/limit, and the client's auto-pagination walks them."""
    import openai

    train = upload(client, write_jsonl(tmp_path / "t.jsonl", ["{broken"]))
    tag = tmp_path.name  # unique to this test: the server is shared with the module's other tests

    def create(metadata: dict | None) -> str:
        return client.fine_tuning.jobs.create(model="tiny", training_file=train.id, metadata=metadata).id

    team_a = [create({"run": tag, "team": "a"}) for _ in range(3)]
    team_b = create({"run": tag, "team": "b"})
    plain = create(None)
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"run": tag}, limit=10).data] == [team_b, *team_a[::-1]]
    first = client.fine_tuning.jobs.list(metadata={"run": tag, "team": "a"}, limit=2)
    assert [j.id for j in first.data] == team_a[::-1][:2] and first.has_more
    second = client.fine_tuning.jobs.list(metadata={"run": tag, "team": "a"}, limit=2, after=first.data[-1].id)
    assert [j.id for j in second.data] == [team_a[0]] and not second.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "a", "run": tag}, limit=1)] == team_a[::-1]
    assert client.fine_tuning.jobs.list(metadata={"run": tag, "team": "c"}).data == []
    without = [j.id for j in client.fine_tuning.jobs.list(extra_query={"metadata": "null"}, limit=100)]
    assert plain in without and not {team_b, *team_a} & set(without)
    with pytest.raises(openai.BadRequestError, match="metadata\\[key\\]=value"):
        client.fine_tuning.jobs.list(extra_query={"metadata": "team"})


def test_second_server_on_the_same_state_folder_is_refused(ft_server, tiny_model_dir):
    from tuneforge.errors import UserError

    with pytest.raises(UserError, match="fine-tuning state folder.*in use by pid"):
        start_server(tiny_model_dir, state_dir=str(ft_server[1]))


def test_worker_killed_fails_the_job_with_the_reason(client, ft_server, tmp_path, monkeypatch):
    import os
    import signal

    monkeypatch.setenv("TUNEFORGE_DEBUG_STEP_SLEEP", "0.5")
    train = upload(client, write_jsonl(tmp_path / "t.jsonl", chat_rows(16)))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=train.id,
                                         extra_body={"tuneforge": {**FAST, "max_steps": 200}})
    wait(client, job.id, states=("running",))
    manager = ft_server[0].served.app.state.finetune
    os.kill(manager.workers[job.id].process.pid, signal.SIGKILL)
    done = wait(client, job.id)
    assert done.status == "failed"
    assert done.error.code == "training_failed" and "killed by SIGKILL" in done.error.message


def adapter_tensors(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_server_restart_resumes_the_job_to_the_same_weights(tiny_model_dir, tmp_path, monkeypatch):
    """Stopped mid-job (as Ctrl-C or a crash stops it), the next server on the folder resumes the job from
    its newest checkpoint; the weights equal those of the same job run without a stop."""
    import torch
    from openai import OpenAI

    monkeypatch.setenv("TUNEFORGE_DEBUG_STEP_SLEEP", "0.3")
    state = tmp_path / "state"
    settings = {"model": "tiny", "seed": 3, "hyperparameters": {"n_epochs": 1, "batch_size": 2},
                "extra_body": {"tuneforge": {**FAST, "max_steps": 8}}}
    first = start_server(tiny_model_dir, state_dir=str(state), training_device="cpu")
    client = OpenAI(base_url=first.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
    train = upload(client, write_jsonl(tmp_path / "t.jsonl", chat_rows(16)))
    job = client.fine_tuning.jobs.create(training_file=train.id, **settings)
    deadline = time.monotonic() + 300
    while not client.fine_tuning.jobs.checkpoints.list(job.id).data and time.monotonic() < deadline:
        time.sleep(0.2)
    first.stop()
    assert not (state / "runs" / job.id / "train_result.json").exists()  # stopped half-way

    monkeypatch.setenv("TUNEFORGE_DEBUG_STEP_SLEEP", "0")
    second = start_server(tiny_model_dir, state_dir=str(state), training_device="cpu")
    try:
        client = OpenAI(base_url=second.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
        done = wait(client, job.id)
        assert done.status == "succeeded", done.error
        assert any("resumes from its newest checkpoint" in e.message for e in all_events(client, job.id))
        assert "resumed from step" in (state / "jobs" / job.id / "worker.log").read_text(encoding="utf-8")
        again = wait(client, client.fine_tuning.jobs.create(training_file=train.id, **settings).id)
        assert again.status == "succeeded"
    finally:
        second.stop()
    resumed, straight = adapter_tensors(state / "runs" / job.id), adapter_tensors(state / "runs" / again.id)
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)
