"""evaluate_run, the HTML report, compare and the CLI, end to end on the tiny model."""

from pathlib import Path

import pytest

from tuneforge.cli.main import main
from tuneforge.config.loader import load_recipe
from tuneforge.eval.compare import compare_runs, side_by_side
from tuneforge.eval.report import write_report
from tuneforge.eval.results import read_results
from tuneforge.eval.runner import evaluate_run
from tuneforge.runs import create_run

EVAL = {"eval.max_new_tokens": 3, "eval.batch_size": 8, "eval.shots": [0, 2], "eval.bootstrap_samples": 100,
        "eval.forgetting_tasks": ["arc_easy"], "eval.forgetting_examples": 4, "eval.general_examples": 6,
        "eval.drift_max_tokens": 16, "eval.behaviour_max_new_tokens": 4}


def _recipe(model_dir: Path, name: str, **extra):
    return load_recipe(overrides={"model.name": str(model_dir), "run.name": name, **EVAL, **extra})


def _save_adapter(model_dir: Path, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    from tuneforge.models import load_model

    model = load_model(str(model_dir))
    # init_lora_weights=False: a non-zero update, so the tuned model really differs from the base
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, tiny_model_dir, rt_rows):
    """One tuned run (adapter, loss curve) evaluated once and shared by the tests that read it."""
    from tests.eval.conftest import sentiment_record, write_jsonl

    root = tmp_path_factory.mktemp("tuned-run")
    test = write_jsonl(root / "test.jsonl", [sentiment_record(r, f"test-{i}") for i, r in enumerate(rt_rows[:8])])
    train = write_jsonl(root / "train.jsonl", [sentiment_record(r, f"train-{i}") for i, r in enumerate(rt_rows[8:28])])
    recipe = _recipe(tiny_model_dir, "tuned", **{"run.output_dir": str(root / "runs")})
    run = create_run(recipe, "train")
    _save_adapter(tiny_model_dir, run.path / "adapter")
    for step, (tr, va) in enumerate([(3.1, 3.0), (2.5, 2.6), (2.2, 2.4)]):
        run.log_metrics(step=step * 10, split="train", loss=tr)
        run.log_metrics(step=step * 10, split="val", loss=va)
    rows = evaluate_run(recipe, run, test, train)
    return run.path, rows


def test_evaluate_run_writes_baselines_tuned_and_forgetting(tuned_run):
    path, rows = tuned_run
    keys = [(r.system, r.task) for r in read_results(path)]
    assert keys == [
        ("base zero-shot", "sentiment"), ("base 2-shot", "sentiment"), ("base", "forgetting:arc_easy"),
        ("base", "forgetting:general_loss"), ("base", "forgetting:behaviour"),
        ("tuned", "sentiment"), ("tuned", "forgetting:arc_easy"), ("tuned", "forgetting:drift"),
        ("tuned", "forgetting:general_loss"), ("tuned", "forgetting:behaviour"),
    ]
    behaviour = next(r for r in rows if r.task == "forgetting:behaviour")
    assert behaviour.extra["task_answers"] == ["fresh", "rotten"]  # the test split's labels, looked for
    for name in ("base-zero-shot", "base-2-shot", "tuned"):
        assert (path / "eval" / f"predictions-{name}.jsonl").is_file()
    logged = [line for line in (path / "metrics.jsonl").read_text().splitlines() if "eval/" in line]
    assert len(logged) == 10  # one line per row written


def test_baseline_only_run_has_no_tuned_or_forgetting_rows(run_dir, tiny_model_dir, splits):
    recipe = _recipe(tiny_model_dir, "baseline")
    run = create_run(recipe, "eval")
    evaluate_run(recipe, run, splits[0], None)  # no train split: k-shot is skipped, not faked
    assert [(r.system, r.task) for r in read_results(run.path)] == [("base zero-shot", "sentiment")]
    html = write_report(run.path).read_text()
    assert "No tuned model in this run" in html
    assert "No training in this run" in html


def test_report_is_self_contained_with_verdict_and_charts(tuned_run):
    path, _ = tuned_run
    html = write_report(path).read_text()
    assert "Was fine-tuning worth it?" in html
    assert "Training and validation loss" in html and "<polyline" in html
    assert "Forgetting" in html and "arc_easy" in html
    # every probe in plain words, with what its sample can detect
    assert "In plain words" in html and "Drift: " in html and "General loss: " in html and "Behaviour: " in html
    assert "<th>detects</th>" in html and "inputs detect a change of" in html
    assert "base 2-shot" in html and "tuned" in html
    assert html.count("<svg") >= 3
    # opens offline: no scripts, stylesheets or images fetched from anywhere
    for needle in ("<script", "<link", "src=", "url(", "https://"):
        assert needle not in html


def test_report_uses_the_data_quality_histogram(tuned_run):
    import json

    path, _ = tuned_run
    (path / "data").mkdir(exist_ok=True)
    (path / "data" / "quality.json").write_text(json.dumps(
        {"tokens": {"histogram": {"edges": [0, 50, 100, 150], "counts": [3, 9, 2]}}}))
    html = write_report(path).read_text()
    assert "data/quality.json" in html


def test_report_lists_the_data_problems_with_file_and_line(tuned_run, tmp_path, rt_rows):
    from tests.eval.conftest import sentiment_record, write_jsonl
    from tuneforge.config.data import DataConfig
    from tuneforge.data.prepare import prepare_data

    path, _ = tuned_run
    records = [sentiment_record(r, f"q-{i}") for i, r in enumerate(rt_rows[:20])]
    records[2]["messages"][2]["content"] = " "
    raw = write_jsonl(tmp_path / "reviews.jsonl", records)
    prepare_data(DataConfig(path=str(raw)), tmp_path / "prepared")
    (path / "data").mkdir(exist_ok=True)
    (path / "data" / "quality.json").write_text((tmp_path / "prepared" / "quality.json").read_text())
    html = write_report(path).read_text()
    assert "<h2>Data quality</h2>" in html and f"{raw}:3: messages[-1].content" in html
    assert "fresh" in html.split("<h2>Data quality</h2>")[1]  # the label balance


def test_compare_and_side_by_side(tuned_run, run_dir, tiny_model_dir, splits):
    path, _ = tuned_run
    other = create_run(_recipe(tiny_model_dir, "other"), "eval")
    evaluate_run(other.recipe, other, splits[0], splits[1])
    table = compare_runs([path, other.path])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "system", "task"] and "accuracy" in lines[0]
    assert sum(1 for line in lines if line.startswith("other ")) == 2
    assert any("forgetting arc_easy: base" in line for line in lines)
    shown = side_by_side([path, other.path], n=2)
    assert "=== test-0" in shown and "tuned / tuned" in shown and "other / base 2-shot" in shown


def test_cli_eval_compare_report(run_dir, tiny_model_dir, splits, capsys):
    test, train = splits
    args = ["eval", "--model", str(tiny_model_dir), "--test", str(test), "--train", str(train), "--shots", "0,1",
            "--max-new-tokens", "2", "--max-examples", "4", "--no-forgetting", "--name", "cli"]
    assert main(args) == 0
    run = run_dir / "runs" / "cli"
    assert (run / "report.html").is_file()
    rows = read_results(run)
    assert [r.system for r in rows] == ["base zero-shot", "base 1-shot"]
    assert rows[0].metrics["accuracy"].n == 4
    assert main(["compare", str(run), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "base 1-shot" in out and "=== test-0" in out
    assert main(["report", str(run)]) == 0


def test_cli_errors_are_one_line(run_dir, tiny_model_dir, capsys):
    assert main(["eval", "--model", str(tiny_model_dir)]) == 2
    assert "no test split" in capsys.readouterr().err
    assert main(["compare", str(run_dir)]) == 2
    assert "no evaluation results" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--test", "x.jsonl", "--shots", "zero"])
    assert "comma-separated integers" in capsys.readouterr().err


def test_target_precision_sizes_the_test_sample_and_probes(run_dir, tiny_model_dir, splits, capsys):
    from tuneforge.eval.runner import sized_for_precision

    recipe = _recipe(tiny_model_dir, "precise", **{"eval.target_precision": 0.1})
    cfg = sized_for_precision(recipe.eval, splits[0])
    assert cfg.max_examples == cfg.forgetting_examples == cfg.general_examples == 97
    out = capsys.readouterr().out
    assert "97 examples per test sample and probe" in out
    assert "the test split has 8 examples" in out and "add 89 test examples" in out


def test_cli_precision_flag_reaches_the_recipe(run_dir, tiny_model_dir, splits, capsys):
    test, train = splits
    args = ["eval", "--model", str(tiny_model_dir), "--test", str(test), "--shots", "0", "--max-new-tokens", "2",
            "--no-forgetting", "--precision", "0.2", "--name", "sized", "--no-report"]
    assert main(args) == 0
    assert "25 examples per test sample and probe" in capsys.readouterr().out
    assert load_recipe(run_dir / "runs" / "sized" / "recipe.yaml").eval.target_precision == 0.2
