"""Sequential fine-tuning: stage planning, replay, and the three-stage example end to end (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuneforge.config import load_recipe
from tuneforge.config.recipe import Recipe
from tuneforge.errors import UserError
from tuneforge.eval.results import read_results
from tuneforge.runs import create_run
from tuneforge.strategies.common import weights_gb
from tuneforge.strategies.stages import plan_stages, replay_rows
from tuneforge.strategies.stages_report import forgetting_table

from .test_multitask import EXAMPLES, ModelWatch, shrink


def test_plan_merges_stage_overrides_into_the_train_section():
    recipe = load_recipe(EXAMPLES / "sequential.yaml")
    plans = plan_stages(recipe)
    assert [p.folder for p in plans] == ["1-general", "2-medical", "3-specific"]
    assert plans[0].recipe.train.learning_rate == recipe.train.learning_rate
    assert plans[1].recipe.train.learning_rate == pytest.approx(1e-4)
    assert plans[2].recipe.train.eval_every == 10
    assert plans[2].recipe.train.batch_size == recipe.train.batch_size  # untouched fields are inherited
    assert plans[2].recipe.data.template == "classify"
    assert plans[0].start_from == "base"  # the first stage always starts from the base model


def test_bad_stage_override_is_reported_with_its_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("stages:\n  - name: a\n    data: {path: x}\n    train: {learning_rat: 0.1}\n")
    with pytest.raises(UserError) as err:
        load_recipe(f)
    text = " ".join(err.value.problems)
    assert "bad.yaml:" in text and "learning_rat" in text


def test_continuing_an_adapter_needs_the_same_adapter_method(tmp_path):
    f = tmp_path / "mixed.yaml"
    f.write_text(
        "stages:\n  - {name: a, data: {path: x}, train: {method: full}}\n"
        "  - {name: b, data: {path: y}, start_from: adapter}\n"
    )
    with pytest.raises(UserError, match="same adapter method"):
        plan_stages(load_recipe(f))


def test_replay_takes_its_share_from_every_earlier_stage(tmp_path):
    earlier = []
    for name in ("s1", "s2"):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps({"messages": [], "meta": {"task": name, "id": i}}) + "\n" for i in range(5)))
        earlier.append(p)
    stage = [{"messages": [], "meta": {"task": "s3", "id": i}} for i in range(40)]
    rows = replay_rows(stage, earlier, share=0.2, seed=0)
    tasks = [r["meta"]["task"] for r in rows]
    assert tasks.count("s3") == 40
    assert tasks.count("s1") + tasks.count("s2") == 10  # 10 of 50 = 20%
    assert tasks.count("s1") == tasks.count("s2") == 5
    assert replay_rows(stage, earlier, share=0.0, seed=0) == stage


def test_forgetting_table_signs():
    from tuneforge.eval.results import MetricValue, ResultRow

    def row(task, acc, loss):
        return ResultRow("x", task, {"accuracy": MetricValue(acc), "ref_loss": MetricValue(loss)})

    scores = {
        "base": {"a": row("a", 0.5, 2.0), "b": row("b", 0.4, 3.0)},
        "after 1-a": {"a": row("a", 0.9, 1.0)},
        "after 2-b": {"a": row("a", 0.7, 1.5), "b": row("b", 0.8, 1.0)},
    }
    t = forgetting_table(scores, ["a", "b"], ["after 1-a", "after 2-b"])
    assert t["gained"]["after 1-a"]["accuracy"] == pytest.approx(0.4)
    assert t["gained"]["after 2-b"]["ref_loss"] == pytest.approx(2.0)  # loss fell by 2: a gain
    assert t["forgotten"]["after 2-b"]["a"]["accuracy"] == pytest.approx(0.2)
    assert t["forgotten"]["after 2-b"]["a"]["ref_loss"] == pytest.approx(0.5)  # loss rose: forgotten
    assert t["forgotten"]["after 1-a"] == {}


def test_three_stage_example_runs_end_to_end(tiny_model_dir, tmp_path):
    from tuneforge.strategies.stages import run_stages

    data = shrink(yaml.safe_load((EXAMPLES / "sequential.yaml").read_text()), tiny_model_dir, tmp_path / "runs", n=24)
    data["eval"]["forgetting"] = True  # the example leaves it off to save CPU time
    recipe = Recipe.model_validate(data)
    run = create_run(recipe, "stages")
    summary = run_stages(recipe, run)

    assert [s["stage"] for s in summary["stages"]] == ["1-general", "2-medical", "3-specific"]
    for s in summary["stages"]:
        assert (Path(s["output_dir"]) / "adapter_config.json").is_file()
    # Stage 3 replays 20% from stages 1 and 2.
    replayed = (run.path / "stages" / "3-specific" / "data" / "train_with_replay.jsonl").read_text().splitlines()
    tasks = [json.loads(line)["meta"]["task"] for line in replayed]
    assert {"general", "medical", "specific"} == set(tasks)
    assert summary["stages"][2]["train_examples"] == len(tasks)
    # The score matrix: base on every task, after stage k on tasks 1..k.
    matrix = summary["table"]["matrix"]
    assert set(matrix["base"]) == {"general", "medical", "specific"}
    assert set(matrix["after 1-general"]) == {"general"}
    assert set(matrix["after 3-specific"]) == {"general", "medical", "specific"}
    assert set(summary["table"]["forgotten"]["after 3-specific"]) == {"general", "medical"}
    systems = {(r.system, r.task) for r in read_results(run.path)}
    assert ("after 2-medical", "general") in systems and ("base", "specific") in systems
    report = (run.path / "report.md").read_text()
    assert "forgotten" in report and "3-specific" in report
    assert (run.path / "model" / "config.json").is_file()
    # General ability after every stage, against the base model: drift and loss on general answers.
    general = summary["general"]
    assert set(general) == {"after 1-general", "after 2-medical", "after 3-specific"}
    for deltas in general.values():
        by_probe = {d["probe"]: d for d in deltas}
        assert set(by_probe) == {"drift", "general_loss"}
        assert by_probe["drift"]["tuned"] > 0 and by_probe["drift"]["n"] == 4
        assert by_probe["general_loss"]["base"] > 0
    assert ("after 3-specific", "forgetting:drift") in systems and ("base", "forgetting:general_loss") in systems
    assert "general drift from base (KL, nats/token)" in report and "General loss: " in report


def test_continuing_an_adapter(tiny_model_dir, tmp_path):
    """start_from: adapter keeps training stage 1's adapter (same rank) on the same base."""
    from tuneforge.strategies.stages import run_stages

    data = shrink(yaml.safe_load((EXAMPLES / "sequential.yaml").read_text()), tiny_model_dir, tmp_path / "runs", n=20)
    data["stages"] = data["stages"][1:]
    data["stages"][1]["start_from"] = "adapter"
    data["stages"][1]["replay"] = 0.0
    recipe = Recipe.model_validate(data)
    run = create_run(recipe, "stages")
    summary = run_stages(recipe, run)
    first, second = (json.loads((Path(s["output_dir"]) / "adapter_config.json").read_text()) for s in summary["stages"])
    assert first["r"] == second["r"]
    assert summary["stages"][1]["start_from"] == "adapter"


def test_cli_names_the_missing_section(capsys):
    from tuneforge.cli.main import main

    assert main(["stages", str(EXAMPLES / "multitask.yaml")]) == 2
    assert "no stages section" in capsys.readouterr().err
    assert main(["multitask", str(EXAMPLES / "sequential.yaml")]) == 2
    assert "no mixture section" in capsys.readouterr().err


def test_a_stage_trains_beside_only_the_weights_it_starts_from(tiny_model_dir, tmp_path, monkeypatch):
    """Nothing held twice: while a stage trains from merged weights, memory holds those weights and the copy
    being trained, not also the base model and the previous stage's trained copy (up to 5 models before);
    while it is scored, the scored model and the merged copy for the next stage. The copy held beside the
    training one comes out of an explicit memory budget, so the stage's planner does not count it twice."""
    import tuneforge.strategies.stages as stages
    from tuneforge.strategies.stages import run_stages

    watch = ModelWatch(monkeypatch, stages)
    data = shrink(yaml.safe_load((EXAMPLES / "sequential.yaml").read_text()), tiny_model_dir, tmp_path / "runs", n=12)
    data["train"]["memory_limit_gb"] = 4
    recipe = Recipe.model_validate(data)
    watch.start()
    run_stages(recipe, create_run(recipe, "stages"))
    assert watch.at_train == [2, 2, 2]
    from transformers import AutoModelForCausalLM

    one_copy = weights_gb(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)))
    assert one_copy > 0 and watch.budgets == pytest.approx([4 - one_copy] * 3)
    # scoring: the base alone, then after each stage the scored model and the merged copy for the next stage
    assert watch.scoring == [1, 2, 2, 2]
