"""The three-task example recipe, end to end on the tiny model: mixture, training, per-task report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuneforge.config.recipe import Recipe
from tuneforge.eval.results import read_results
from tuneforge.runs import create_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def shrink(data: dict, model_dir: Path, out: Path, n: int = 30) -> dict:
    """An example recipe cut down to the tiny model, a few examples per task and a few steps."""
    data["model"] = {"name": str(model_dir)}
    data["run"] = {"output_dir": str(out), "name": data.get("run", {}).get("name")}
    data["train"] = {**data.get("train", {}), "max_steps": 3, "batch_size": 4, "eval_every": 2,
                     "max_length": 256, "save_every": 100}
    data["eval"] = {**data.get("eval", {}), "max_examples": 4, "max_new_tokens": 2, "bootstrap_samples": 0,
                    "batch_size": 4, "forgetting_examples": 4, "general_examples": 4, "drift_max_tokens": 16,
                    "behaviour_max_new_tokens": 4}
    for section in ("mixture", "stages"):
        entries = (data.get(section) or {}).get("tasks") if section == "mixture" else data.get(section)
        for entry in entries or []:
            entry["data"]["max_examples"] = n
    return data


def models_alive() -> int:
    """Whole models alive (not their inner decoders); session fixtures may hold some."""
    import gc

    from transformers import PreTrainedModel

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, PreTrainedModel) and hasattr(o, "lm_head"))


class ModelWatch:
    """Models alive (beyond those at ``start()``) at each ``train()`` call of a strategy and at each of its
    ``score_tasks`` calls, and the memory budget each training was given."""

    def __init__(self, monkeypatch, strategy) -> None:
        import tuneforge.train as train_pkg

        self.at_train: list[int] = []
        self.scoring: list[int] = []
        self.budgets: list[float | None] = []
        self.before = 0
        real_train, real_score = train_pkg.train, strategy.score_tasks

        def counting_train(recipe, *args, **kwargs):
            self.at_train.append(models_alive() - self.before)
            self.budgets.append(recipe.train.memory_limit_gb)
            return real_train(recipe, *args, **kwargs)

        def counting_score(*args, **kwargs):
            self.scoring.append(models_alive() - self.before)
            return real_score(*args, **kwargs)

        monkeypatch.setattr(train_pkg, "train", counting_train)
        monkeypatch.setattr(strategy, "score_tasks", counting_score)

    def start(self) -> None:
        self.at_train.clear(), self.scoring.clear(), self.budgets.clear()
        self.before = models_alive()


def test_three_task_mixture_runs_end_to_end(tiny_model_dir, tmp_path):
    from tuneforge.strategies.multitask import run_multitask

    data = shrink(yaml.safe_load((EXAMPLES / "multitask.yaml").read_text()), tiny_model_dir, tmp_path / "runs")
    recipe = Recipe.model_validate(data)
    run = create_run(recipe, "multitask")
    summary = run_multitask(recipe, run)

    names = [t.name for t in recipe.mixture.tasks]
    assert [t["task"] for t in summary["tasks"]] == names
    # Every task is in the mixture, tagged, with the share the temperature strategy gave it.
    mixed = [json.loads(line) for line in (run.path / "data" / "mixture" / "train.jsonl").read_text().splitlines()]
    counts = {n: sum(1 for r in mixed if r["meta"]["task"] == n) for n in names}
    assert counts == {t["task"]: t["mixture"]["examples"] for t in summary["tasks"]}
    assert all(c > 0 for c in counts.values())
    # Validation loss per task before and after, logged as metrics too.
    for t in summary["tasks"]:
        assert t["val_loss_before"] > 0 and t["val_loss_after"] > 0
    # ... and at every validation during training (eval_every 2 of 3 steps).
    logged = {(m["task"], m["step"]) for m in run.read_metrics() if m.get("split") == "val" and "task" in m}
    assert {(n, step) for n in names for step in (0, 2)} <= logged
    # Training loss per task too: the task tags ride through packing into every logged step.
    trained = {m["task"] for m in run.read_metrics() if m.get("split") == "train" and "task" in m}
    assert trained == set(names)
    # Per-task test scores for the base and the tuned model, in the shared results file.
    rows = {(r.system, r.task) for r in read_results(run.path)}
    assert {(s, n) for s in ("base", "multitask") for n in names} <= rows
    # Forgetting probes for both models, paired input by input (the example turns them on): the
    # multiple-choice ones, and drift, general loss and behaviour on general text, chat and instructions.
    choice = set(recipe.eval.forgetting_tasks)
    by_probe = {f["probe"]: f for f in summary["forgetting"]}
    assert set(by_probe) == choice | {"drift", "general_loss", "behaviour"}
    assert all(f["n"] == 4 and 0 <= f["base"] <= 1 and 0 <= f["tuned"] <= 1
               for f in summary["forgetting"] if f["probe"] in choice)
    assert by_probe["drift"]["tuned"] > 0 and by_probe["general_loss"]["base"] > 0
    assert all(f["reading"] for f in summary["forgetting"])
    assert {(s, "forgetting:" + p) for s in ("base", "multitask") for p in choice} <= rows
    report = (run.path / "report.md").read_text()
    assert all(n in report for n in names)
    assert "Forgetting" in report and all(p in report for p in choice)
    assert "| drift |" in report and "| general_loss |" in report and "- Drift: " in report
    assert (run.path / "adapter" / "adapter_config.json").is_file()


def test_multitask_trains_and_scores_one_model_at_a_time(tiny_model_dir, tmp_path, monkeypatch):
    """Nothing held twice: the base is freed once its rows are scored, before training loads its own copy
    (the memory planner counts the model it trains, nothing beside it); the tuned rows are scored on the
    trained model, not on a second copy read back from the run folder. A caller's model, which stays in
    memory, comes out of an explicit budget instead."""
    import tuneforge.strategies.multitask as multitask
    from tuneforge.strategies.common import weights_gb

    watch = ModelWatch(monkeypatch, multitask)
    data = shrink(yaml.safe_load((EXAMPLES / "multitask.yaml").read_text()), tiny_model_dir, tmp_path / "runs", n=12)
    data["train"]["memory_limit_gb"] = 4
    data["eval"]["forgetting"] = False
    recipe = Recipe.model_validate(data)
    watch.start()
    multitask.run_multitask(recipe, create_run(recipe, "multitask"))
    assert watch.at_train == [1] and watch.budgets == [4]  # before: the base beside the trained copy, not budgeted
    assert watch.scoring == [1, 1]  # the base, then the trained model (before: 2 then, base copy and tuned)

    from transformers import AutoModelForCausalLM

    mine = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    data["run"]["name"] = "with-a-model"
    recipe = Recipe.model_validate(data)
    watch.start()
    multitask.run_multitask(recipe, create_run(recipe, "multitask"), model=mine)
    assert watch.budgets == pytest.approx([4 - weights_gb(mine)])
