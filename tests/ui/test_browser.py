"""The UI in a real browser (Chromium from the system packages, driven by Playwright), on the tiny model.

Screenshots go to each test's tmp folder (``<tmp>/shots/*.png``).
"""

from __future__ import annotations

import os
import signal
import time

from tests.ui.conftest import KEY, hold_lock, login, make_run, training_recipe
from tests.ui.test_catalog import RESULTS
from tuneforge.ui.catalog import pid_alive


def shot(page, tmp_path, name: str) -> None:
    (tmp_path / "shots").mkdir(exist_ok=True)
    page.screenshot(path=str(tmp_path / "shots" / f"{name}.png"), full_page=True)


def submit(page, selector: str) -> None:
    """Click a button that posts a form and wait for the page it redirects to.

    Stop and Resume redirect back to the same URL, so ``wait_for_url`` returns at once; a predicate run
    while the old document unloads would then find no ``#status`` at all.
    """
    with page.expect_navigation():
        page.click(selector)


def wait_status(page, status: str, timeout: int) -> None:
    page.wait_for_function(f"document.querySelector('#status')?.textContent === '{status}'", timeout=timeout)


def test_pages_without_the_key_redirect_to_login(tmp_path, serve_ui, page):
    runs = tmp_path / "runs"
    make_run(runs, "done", finished=True)
    url = serve_ui(runs)
    for path in ("/", "/runs/done", "/launch"):
        page.goto(url + path)
        assert page.url == url + "/login"
    page.fill("#key", "wrong-key-000000")
    page.click("#login")
    assert "wrong API key" in page.inner_text("#login-error")
    login(page, url)
    assert page.locator("tr[data-run=done]").count() == 1
    shot(page, tmp_path, "runs-after-login")


def test_runs_list_shows_finished_failed_and_running(tmp_path, serve_ui, page):
    runs = tmp_path / "runs"
    make_run(runs, "done", finished=True, results=RESULTS)
    make_run(runs, "broke")
    holder = hold_lock(make_run(runs, "busy"))
    try:
        url = serve_ui(runs)
        login(page, url)
        status = {name: page.inner_text(f"tr[data-run={name}] .status") for name in ("done", "broke", "busy")}
        assert status == {"done": "finished", "broke": "failed", "busy": "running"}
        assert page.inner_text("tr[data-run=done] .verdict") == "yes"
        shot(page, tmp_path, "runs")
        page.click("text=done")
        assert "fine-tuning" in page.inner_text("#verdict").lower() or "tuned" in page.inner_text("#verdict")
        assert page.locator("#metrics").count() == 1
        page.wait_for_function("document.querySelector('#chart').dataset.points === '3'")  # its whole curve
        shot(page, tmp_path, "run-finished")
    finally:
        holder.kill()
        holder.wait()


def test_a_recipe_with_two_mistakes_shows_both_with_their_lines(tmp_path, serve_ui, page):
    url = serve_ui(tmp_path / "runs")
    login(page, url)
    page.goto(url + "/launch")
    page.fill("#recipe", "model:\n  name: x\ntrain:\n  learning_rate: fast\n  epochz: 2\n")
    # Checked as you type, before any submit: both problems with their lines.
    page.wait_for_function("document.querySelector('#live-problems').dataset.count === '2'")
    live = page.inner_text("#live-problems")
    assert "recipe.yaml:4: train.learning_rate" in live and "recipe.yaml:5: train.epochz" in live
    # ...and marked beside their lines in the editor: the gutter's numbers and a note on the same row.
    assert page.get_attribute("#gutter", "data-marked") == "4,5"
    assert page.locator("#gutter .bad").all_inner_texts() == ["4", "5"]
    notes = page.locator("#notes .bad")
    assert [notes.nth(i).get_attribute("data-line") for i in range(2)] == ["4", "5"]
    assert "learning_rate" in notes.nth(0).inner_text() and "epochz" in notes.nth(1).inner_text()
    row4, note4 = page.locator("#gutter [data-line='4']").bounding_box(), notes.nth(0).bounding_box()
    assert abs(row4["y"] - note4["y"]) < 1  # the note sits on its line's row
    page.click("#start")
    problems = page.inner_text("#problems")
    assert "recipe.yaml:4: train.learning_rate" in problems
    assert "recipe.yaml:5: train.epochz" in problems and "epochs" in problems
    assert page.get_attribute("#gutter", "data-marked") == "4,5"  # still marked after the submit
    shot(page, tmp_path, "launch-problems")
    assert not list((tmp_path / "runs" / ".ui").glob("*.json"))  # nothing started


def test_launch_watch_the_curve_grow_and_stop(tmp_path, serve_ui, page, tiny_model_dir):
    runs = tmp_path / "runs"
    url = serve_ui(runs)
    login(page, url)
    page.goto(url + "/launch")
    page.fill("#recipe", training_recipe(tiny_model_dir, "live", 2000, save_every=5))
    page.click("#start")
    page.wait_for_url(url + "/runs/live")
    # The curve gains points while the page stays loaded (no reload: the same document object).
    page.evaluate("window.__same_page = true")
    page.wait_for_function("Number(document.querySelector('#chart').dataset.points || 0) >= 2"
                           " || (document.querySelector('#status')?.textContent ?? 'running') !== 'running'", timeout=180_000)
    assert page.inner_text("#status") == "running", page.inner_text("#log")
    first = int(page.get_attribute("#chart", "data-points"))
    page.wait_for_function(f"Number(document.querySelector('#chart').dataset.points) > {first}", timeout=120_000)
    assert page.evaluate("window.__same_page") is True
    assert "step" in page.inner_text("#progress")
    shot(page, tmp_path, "run-live")
    pid = _run_pid(runs)
    submit(page, "#stop")
    assert page.url == url + "/runs/live"
    wait_status(page, "killed", 120_000)
    _wait_gone(pid)
    shot(page, tmp_path, "run-stopped")


def _run_pid(runs) -> int:
    import json

    return int(json.loads((runs / ".ui" / "live.json").read_text())["pid"])


def _wait_gone(pid: int) -> None:
    for _ in range(600):
        if not pid_alive(pid):  # exited (a zombie not yet reaped by the UI server counts as exited)
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"run process {pid} still alive after Stop")


def test_no_key_configured_means_no_login(tmp_path, serve_ui, page):
    url = serve_ui(tmp_path / "runs", key=None)
    page.goto(url + "/")
    assert page.url == url + "/"
    assert KEY not in page.content()


def test_stop_then_resume_from_the_ui_gives_the_weights_of_an_uninterrupted_run(tmp_path, serve_ui, page,
                                                                                 tiny_model_dir, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from tuneforge.cli.main import main

    runs = tmp_path / "runs"
    url = serve_ui(runs)
    login(page, url)
    page.goto(url + "/launch")
    page.fill("#recipe", training_recipe(tiny_model_dir, "stopped", 80))
    page.click("#start")
    page.wait_for_url(url + "/runs/stopped")
    page.wait_for_function("Number(document.querySelector('#chart').dataset.points || 0) >= 4"
                           " || (document.querySelector('#status')?.textContent ?? 'running') !== 'running'", timeout=180_000)
    assert page.inner_text("#status") == "running", page.inner_text("#log")
    submit(page, "#stop")
    wait_status(page, "killed", 120_000)
    assert not (runs / "stopped" / "adapter").exists()  # it really stopped before the end
    submit(page, "#resume")
    wait_status(page, "finished", 300_000)
    shot(page, tmp_path, "run-resumed")

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "straight.yaml"
    recipe.write_text(training_recipe(tiny_model_dir, "straight", 80))
    assert main(["train", str(recipe), "--set", f"run.output_dir={runs}"]) == 0
    resumed = load_file(runs / "stopped" / "adapter" / "adapter_model.safetensors")
    straight = load_file(runs / "straight" / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key


def test_compare_shows_metrics_side_by_side_and_overlays_curves(tmp_path, serve_ui, page):
    import copy

    runs = tmp_path / "runs"
    other = copy.deepcopy(RESULTS)
    other["rows"][1]["metrics"]["accuracy"]["value"] = 0.7
    make_run(runs, "first", finished=True, results=RESULTS)
    make_run(runs, "second", finished=True, results=other, losses=[1.0, 0.8])
    url = serve_ui(runs)
    login(page, url)
    page.check("tr[data-run=first] input[type=checkbox]")
    page.check("tr[data-run=second] input[type=checkbox]")
    page.click("#compare")
    row = page.inner_text("#compare-metrics tr:has(td:text-is('tuned'))")
    assert "0.900" in row and "0.700" in row
    page.wait_for_function("document.querySelector('#overlay').dataset.points === '5'")  # 3 + 2 points
    assert page.locator("#overlay polyline").count() == 2
    shot(page, tmp_path, "compare")


def test_the_arena_streams_two_answers_and_keeps_them_with_the_run(tmp_path, serve_ui, page, tiny_model_dir):
    import json

    from tests.export.helpers import make_lora_run
    from tuneforge import atomic

    runs = tmp_path / "runs"
    folder = make_lora_run(runs / "tuned", tiny_model_dir)
    atomic.write_json(folder / "train_result.json", {"steps": 1})
    url = serve_ui(runs)
    login(page, url)
    page.goto(url + "/arena")
    page.fill("#prompt", "Is this review positive? A warm, funny film.")
    page.click("#ask")
    for system in ("base", "tuned"):
        page.wait_for_function(f"document.querySelector('#answer-{system}').dataset.done === '1'", timeout=180_000)
    base, tuned = page.inner_text("#answer-base"), page.inner_text("#answer-tuned")
    assert base.strip() and tuned.strip() and base != tuned  # the adapter changes the answer
    chunks = [int(page.get_attribute(f"#answer-{s}", "data-chunks")) for s in ("base", "tuned")]
    assert max(chunks) > 1  # streamed in pieces, not sent whole
    shot(page, tmp_path, "arena")
    kept = [json.loads(line) for line in (folder / "arena.jsonl").read_text().splitlines()]
    assert {(k["system"], k["answer"]) for k in kept} == {("base", base), ("tuned", tuned)}
