from __future__ import annotations

import json

from tuneforge.config import load_recipe
from tuneforge.runs import create_run, open_run


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
