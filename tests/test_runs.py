from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tuneforge.config import load_recipe
from tuneforge.errors import UserError
from tuneforge.runs import create_run, open_run

ROOT = Path(__file__).resolve().parents[1]


def test_run_folder_records_what_reproduces_it(run_dir):
    data = run_dir / "train.jsonl"
    data.write_text('{"messages": []}\n')
    recipe = load_recipe(None, {"run.name": "exp1", "run.seed": 123})
    run = create_run(recipe, "train", inputs=[data])
    assert run.path == run_dir / "runs" / "exp1"
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["seed"] == 123
    assert manifest["command"] == "train"
    assert len(manifest["inputs"][str(data)]) == 64  # sha256 hex
    assert "torch" in manifest["versions"] and "transformers" in manifest["versions"]
    assert (run.path / "logs" / "run.log").is_file()
    assert load_recipe(run.path / "recipe.yaml").run.seed == 123

    run.log_metrics(step=1, split="train", loss=2.5)
    run.log_metrics(step=2, split="val", loss=2.0)
    assert [m["loss"] for m in open_run(run.path).read_metrics()] == [2.5, 2.0]


def test_existing_run_is_never_overwritten(run_dir):
    recipe = load_recipe(None, {"run.name": "same"})
    first = create_run(recipe, "eval")
    second = create_run(recipe, "eval")
    assert first.path != second.path and first.path.is_dir() and second.path.name == "same-2"


def test_create_run_refuses_a_name_that_leaves_output_dir(run_dir):
    recipe = load_recipe(None, {"run.name": "ok"})
    recipe.run.__dict__["name"] = "../escape"  # bypass validation, as a hand-built recipe could
    with pytest.raises(UserError, match="run.name"):
        create_run(recipe, "train")
    assert not (run_dir / "escape").exists()


def test_create_run_refuses_a_run_folder_that_links_outside(run_dir):
    (run_dir / "runs").mkdir()
    (run_dir / "elsewhere").mkdir()
    (run_dir / "runs" / "linked").symlink_to(run_dir / "elsewhere")
    with pytest.raises(UserError, match="outside"):
        create_run(load_recipe(None, {"run.name": "linked"}), "train", resume=True)
    assert list((run_dir / "elsewhere").iterdir()) == []


def test_a_run_holds_its_folder_until_it_ends(run_dir):
    recipe = load_recipe(None, {"run.name": "mine"})
    run = create_run(recipe, "train")
    with pytest.raises(UserError, match="this process already holds"):
        create_run(recipe, "train", resume=True)
    run.close()
    with create_run(recipe, "train", resume=True) as again:  # released at close: reusable at once
        assert again.path == run.path
    create_run(recipe, "train", resume=True)  # dropped without close(): garbage collection releases it
    create_run(recipe, "train", resume=True).close()


HOLDER = textwrap.dedent(
    """
    import time
    from tuneforge.config import load_recipe
    from tuneforge.runs import create_run

    run = create_run(load_recipe(None, {"run.name": "held"}), "train")
    print("holding", flush=True)
    time.sleep(600)
    """
)


def test_second_writer_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(run_dir, tiny_model_dir,
                                                                                      capsys):
    from tuneforge.cli.main import main

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=run_dir, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        recipe = load_recipe(None, {"run.name": "held"})
        with pytest.raises(UserError, match=f"in use by pid {holder.pid} "):
            create_run(recipe, "train", resume=True)
        capsys.readouterr()
        assert main(["train", "--name", "held", "--resume", "--model", str(tiny_model_dir), "--data", "x"]) == 2
        assert f"in use by pid {holder.pid} " in capsys.readouterr().err
    finally:
        holder.kill()  # SIGKILL: the holder runs no cleanup at all
        holder.wait()
    with create_run(recipe, "train", resume=True) as run:
        assert run.path == run_dir / "runs" / "held"


def test_a_failed_write_leaves_the_run_files_whole(run_dir):
    from tests.faults import disk_full, snapshot

    recipe = load_recipe(None, {"run.name": "full"})
    run = create_run(recipe, "train")
    run.update_manifest(notes="x" * 4000)
    run.close()
    before = snapshot(run.path)
    with disk_full(1024), pytest.raises(OSError):  # recipe.yaml and manifest.json are both > 1 kB
        create_run(recipe, "train", resume=True)
    assert snapshot(run.path) == before  # the old files, whole, and no temporary left behind


def test_a_closed_run_collected_later_does_not_release_the_next_holder(run_dir):
    recipe = load_recipe(None, {"run.name": "twice"})
    first = create_run(recipe, "train")
    first.close()
    second = create_run(recipe, "train", resume=True)
    del first  # garbage collection of the closed run must leave the second one's hold alone
    with pytest.raises(UserError, match="this process already holds"):
        create_run(recipe, "train", resume=True)
    second.close()
