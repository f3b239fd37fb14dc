"""The run page shows the whole evaluation in a real browser (Chromium, Playwright): the forgetting table,
answers side by side and the data quality report, from a run evaluated for real on the tiny model."""

from __future__ import annotations

import json

import pytest

from tests.ui.conftest import login
from tests.ui.test_browser import shot

EVAL = {"eval.max_new_tokens": 3, "eval.batch_size": 8, "eval.shots": [0], "eval.bootstrap_samples": 100,
        "eval.forgetting_tasks": ["arc_easy"], "eval.forgetting_examples": 4, "eval.general_examples": 6,
        "eval.drift_max_tokens": 16, "eval.behaviour_max_new_tokens": 4}


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, tiny_model_dir):
    """A run as `tuneforge train` + `eval` leave it: data prepared (with one bad row) by the data API,
    a LoRA adapter, a loss curve, and the test split and forgetting probes evaluated for base and tuned."""
    from tests.eval.conftest import rotten_tomatoes_rows, sentiment_record, write_jsonl
    from tests.eval.test_runner_report import _save_adapter
    from tuneforge.config.loader import load_recipe
    from tuneforge.data.prepare import prepare_data
    from tuneforge.eval.runner import evaluate_run
    from tuneforge.runs import create_run

    root = tmp_path_factory.mktemp("evaluated")
    records = [sentiment_record(r, f"rt-{i}") for i, r in enumerate(rotten_tomatoes_rows()[:40])]
    records[4]["messages"][2]["content"] = ""  # line 5: an empty answer, a problem prepare reports
    raw = write_jsonl(root / "reviews.jsonl", records)
    recipe = load_recipe(overrides={"model.name": str(tiny_model_dir), "run.name": "evaluated",
                                    "run.output_dir": str(root / "runs"), "data.path": str(raw),
                                    "data.val_fraction": 0.2, "data.test_fraction": 0.2, **EVAL})
    with create_run(recipe, "train") as run:
        data = prepare_data(recipe.data, run.path / "data")
        _save_adapter(tiny_model_dir, run.path / "adapter")
        for step, loss in enumerate([3.1, 2.5, 2.2]):
            run.log_metrics(step=step, split="train", loss=loss)
        evaluate_run(recipe, run, data.test, data.train)
    (run.path / "train_result.json").write_text(json.dumps({"steps": 3}))
    return run.path, raw


def test_a_run_page_shows_forgetting_answers_side_by_side_and_data_problems(evaluated_run, serve_ui, page):
    folder, raw = evaluated_run
    url = serve_ui(folder.parent)
    login(page, url)
    page.goto(url + "/runs/evaluated")
    # Forgetting: base vs tuned per probe, with the paired interval where the probe has one.
    probes = page.eval_on_selector_all("#forgetting tr[data-probe]", "rows => rows.map(r => r.dataset.probe)")
    assert "arc_easy" in probes and "drift" in probes
    arc = page.locator("#forgetting tr[data-probe='arc_easy'] td").all_inner_texts()
    assert arc[5].startswith("[") and arc[5] != "-"  # its 95% interval
    # Answers side by side: base and tuned answers to the same example, a few at first, then more.
    first = page.locator("#examples .example").first
    systems = first.locator(".side-answer").evaluate_all("cols => cols.map(c => c.dataset.system)")
    assert systems == ["base zero-shot", "tuned"]
    test_ids = [json.loads(line)["meta"]["id"] for line in (folder / "data" / "test.jsonl").read_text().splitlines()]
    assert first.get_attribute("data-id") in test_ids
    visible = page.locator("#examples .example:visible")
    assert visible.count() == 3
    page.click("#more-examples")
    assert visible.count() == len(test_ids) == page.locator("#examples .example").count()
    # Data quality: label balance, the length histogram and each problem with its file:line.
    quality = page.locator(".quality[data-name='data']")
    assert quality.locator("tr[data-label]").count() == 2
    assert f"{raw}:5: messages[-1].content: the answer is empty" in quality.locator(".problems").inner_text()
    assert page.locator("#lengths svg").count() == 1
    shot(page, folder.parent.parent, "run-evaluation")


def test_a_mixture_run_page_draws_one_curve_per_task_that_grows_without_reload(tmp_path, serve_ui, page,
                                                                               tiny_model_dir):
    from tuneforge.config.loader import load_recipe
    from tuneforge.runs import create_run

    recipe = load_recipe(overrides={"model.name": str(tiny_model_dir), "run.name": "mix",
                                    "run.output_dir": str(tmp_path / "runs"), "train.max_steps": 10})
    # Logged as the training loop and strategies/multitask log a mixture: the run's loss, and per task.
    with create_run(recipe, "multitask") as run:  # holds the folder's lock: the run shows as running
        def log(step: int) -> None:
            run.log_metrics(step=step, split="train", loss=3.0 - 0.1 * step, tokens_per_s=100.0)
            run.log_metrics(step=step, split="train", task="sentiment", loss=2.0 - 0.1 * step, tokens=50)
            run.log_metrics(step=step, split="train", task="movie", loss=4.0 - 0.1 * step, tokens=70)
            if step % 2 == 0:
                run.log_metrics(step=step, split="val", loss=3.1 - 0.1 * step)
                run.log_metrics(step=step, split="val", task="sentiment", loss=2.1 - 0.1 * step)
                run.log_metrics(step=step, split="val", task="movie", loss=4.1 - 0.1 * step)

        for step in range(1, 5):
            log(step)
        url = serve_ui(tmp_path / "runs")
        login(page, url)
        page.goto(url + "/runs/mix")
        page.wait_for_function("document.querySelector('#chart').dataset.points === '18'")  # 4 x 3 train + 2 x 3 val
        legend = page.locator("#chart .legend").all_text_contents()
        assert sorted(legend) == sorted(["train loss", "train (sentiment) loss", "train (movie) loss", "val loss",
                                         "val (sentiment) loss", "val (movie) loss"])
        assert page.locator("#chart polyline").count() == 6
        assert "loss 2.6000" in page.inner_text("#progress")  # the run's own loss, not a task's
        page.evaluate("window.__same_page = true")
        log(5)
        log(6)
        page.wait_for_function("document.querySelector('#chart').dataset.points === '27'")  # 18 + 3 + 6
        assert page.evaluate("window.__same_page") is True
        shot(page, tmp_path, "run-mixture")
