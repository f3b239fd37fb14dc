"""Train-then-evaluate holds one model at a time: the LoRA model doubles as the base (adapter switched off);
a fully trained model is never in memory beside the base model the evaluation loads."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import pytest
import yaml

from tests.train.helpers import conversation, rotten_tomatoes_rows


def _recipe(tmp_path: Path, model: Path, method: str):
    from tuneforge.config import load_recipe

    data = tmp_path / "prepared"
    data.mkdir()
    rows = [conversation(r) for r in rotten_tomatoes_rows(28)]
    for name, part in (("train", rows[:16]), ("val", rows[16:22]), ("test", rows[22:])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    recipe = {
        "model": {"name": str(model)},
        "run": {"output_dir": str(tmp_path / "runs"), "seed": 7},
        "data": {"path": str(data)},
        "train": {"method": method, "max_steps": 1, "batch_size": 4, "max_length": 128, "eval_every": 1,
                  "learning_rate": 1e-3},
        "eval": {"shots": [0], "forgetting": False, "max_new_tokens": 2},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return load_recipe(tmp_path / "r.yaml")


@pytest.fixture()
def watched(monkeypatch):
    """Weak references to the model training returned, and at every later ``load_model`` call whether it
    was still alive; the model object each evaluation ran on."""
    import tuneforge.eval.evaluate as evaluate
    import tuneforge.models as models
    import tuneforge.train as train_pkg

    seen: dict[str, list] = {"trained": [], "alive_at_load": [], "evaluated": []}
    train, load_model, evaluate_split = train_pkg.train, models.load_model, evaluate.evaluate_split

    def recording_train(*args, **kwargs):
        result = train(*args, **kwargs)
        seen["trained"].append(weakref.ref(result.model))
        return result

    def recording_load(*args, **kwargs):
        if seen["trained"]:
            seen["alive_at_load"].append(seen["trained"][0]() is not None)
        return load_model(*args, **kwargs)

    def recording_split(model, *args, **kwargs):
        seen["evaluated"].append(model)
        return evaluate_split(model, *args, **kwargs)

    monkeypatch.setattr(train_pkg, "train", recording_train)
    monkeypatch.setattr(models, "load_model", recording_load)
    monkeypatch.setattr(evaluate, "evaluate_split", recording_split)
    return seen


def test_full_fine_tuning_never_holds_the_tuned_model_beside_the_base(tmp_path, tiny_model_dir, watched):
    from tuneforge.runs import create_run
    from tuneforge.strategies.sft import run_sft

    recipe = _recipe(tmp_path, tiny_model_dir, "full")
    with create_run(recipe, "train") as run:
        out = run_sft(recipe, run)
    # The base is loaded for its rows, then the tuned weights from the run folder: at neither load is the
    # model training returned still in memory (before: the base was loaded beside it).
    assert watched["alive_at_load"] == [False, False]
    assert [r.system for r in out.eval_rows] == ["base zero-shot", "tuned"]
    assert out.train.model is None  # dropped on purpose; the weights are in the run folder
    assert (run.path / "model").is_dir()


def test_lora_base_rows_reuse_the_trained_model_with_its_adapter_off(tmp_path, tiny_model_dir, watched):
    from tuneforge.runs import create_run
    from tuneforge.strategies.sft import run_sft

    recipe = _recipe(tmp_path, tiny_model_dir, "lora")
    with create_run(recipe, "train") as run:
        out = run_sft(recipe, run)
    assert watched["alive_at_load"] == []  # no second copy of the base is loaded
    assert [r.system for r in out.eval_rows] == ["base zero-shot", "tuned"]
    assert all(m is out.train.model for m in watched["evaluated"])
