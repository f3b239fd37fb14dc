from __future__ import annotations

import subprocess
import sys

import pytest

from tuneforge.config import load_recipe
from tuneforge.errors import UserError

BAD = """\
model:
  name: smollm2-135m-instruct
train:
  learning_rate: fast
  epochz: 2
data:
  format: chat
"""


def test_all_problems_reported_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    text = info.value.render()
    assert "3 problems" in text
    assert f"{path}:4: train.learning_rate" in text  # wrong type, with its line
    assert f"{path}:5: train.epochz: unknown key; did you mean 'epochs'?" in text
    assert "data.path: required field is missing" in text


def test_cli_reports_problems_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    out = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli.main", "config", "show", str(path)],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n  - ") == 3


def test_overrides_win_and_keep_types(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("train:\n  learning_rate: 1.0e-4\n")
    r = load_recipe(path, {"train.learning_rate": 3e-4, "train.lora.r": 4, "run.seed": 7})
    assert r.train.learning_rate == 3e-4
    assert r.train.lora.r == 4
    assert r.run.seed == 7


def test_bad_override_value_is_reported_with_path():
    with pytest.raises(UserError) as info:
        load_recipe(None, {"train.batch_size": "many"})
    assert "train.batch_size" in info.value.render()


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  learning_rate: [1,\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert f"{path}:" in str(info.value) and "invalid YAML" in str(info.value)


def test_config_show_round_trips(tmp_path):
    from tuneforge.cli.main import main

    path = tmp_path / "ok.yaml"
    path.write_text("train:\n  method: full\n")
    out = tmp_path / "resolved.yaml"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["config", "show", str(path), "--set", "train.epochs=3"]) == 0
    out.write_text(buf.getvalue())
    again = load_recipe(out)
    assert again.train.method == "full" and again.train.epochs == 3
    assert again.model.name == "smollm2-135m-instruct"


def test_config_docs_documents_every_field(capsys):
    from tuneforge.cli.main import main

    assert main(["config", "docs"]) == 0
    text = capsys.readouterr().out
    assert "train.learning_rate (float, default 0.0002):" in text
    assert "model.trust_remote_code" in text


ESCAPING_NAMES = ["../escape", "..", ".", "", "/tmp/abs", "a/b", ".hidden", "nul\x00byte", "back\\slash"]


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_run_stage_and_task_names_must_be_one_plain_folder(name):
    with pytest.raises(UserError) as info:
        load_recipe(None, {"run.name": name})
    assert "run.name" in info.value.render()
    stage = {"name": name, "data": {"path": "x"}}
    with pytest.raises(UserError) as info:
        load_recipe(None, {"stages": [stage]})
    assert "stages.0.name" in info.value.render()
    with pytest.raises(UserError) as info:
        load_recipe(None, {"mixture": {"tasks": [stage]}})
    assert "mixture.tasks.0.name" in info.value.render()


def test_plain_names_are_accepted():
    recipe = load_recipe(None, {"run.name": "lora-r8_v1.2", "stages": [{"name": "général", "data": {"path": "x"}}]})
    assert recipe.run.name == "lora-r8_v1.2" and recipe.stages[0].name == "général"


def test_cli_train_refuses_an_escaping_name_before_writing_anything(tmp_path, monkeypatch):
    from tuneforge.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--name", "../escape", "--data", "x.jsonl"]) == 2
    assert list(tmp_path.iterdir()) == []
