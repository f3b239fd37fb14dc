"""The RAG and Export pages and base + RAG in the Arena, in a real browser (Chromium, Playwright), on the
tiny model and a small real index (three of Python's reference topics, bundled MiniLM embedder)."""

from __future__ import annotations

import json

from tests.ui.conftest import index_copy, login
from tests.ui.test_browser import shot
from tuneforge import atomic

QUESTION = "What does the pass statement do? It is a null operation."
SLOW = 300_000  # ms: a form post that answers with a model, on a shared 2-core machine


def _finished_lora_run(runs, tiny_model_dir, name: str = "tuned"):
    from tests.export.helpers import make_lora_run

    folder = make_lora_run(runs / name, tiny_model_dir)
    atomic.write_json(folder / "train_result.json", {"steps": 1})
    return folder


def _sources(page) -> list[str]:
    return page.eval_on_selector_all("#sources tr[data-doc]", "rows => rows.map(r => r.dataset.doc)")


def test_deleting_a_rag_document_removes_it_from_the_answers_sources(tmp_path, serve_ui, page, rag_index,
                                                                     tiny_model_dir):
    runs = tmp_path / "runs"
    _finished_lora_run(runs, tiny_model_dir)
    index = index_copy(rag_index, tmp_path / "kb")
    url = serve_ui(runs, indexes=[index])
    page.set_default_timeout(SLOW)
    login(page, url)
    page.click("nav >> text=RAG")
    docs = page.eval_on_selector_all("#documents tr[data-doc]", "rows => rows.map(r => r.dataset.doc)")
    assert docs == ["topics/break", "topics/pass", "topics/while"]
    page.fill("#question", QUESTION)
    page.select_option("#rag-run", "tuned")
    page.click("#ask")
    page.wait_for_selector("#sources", timeout=180_000)
    before = _sources(page)
    assert before[0] == "topics/pass"  # the document that answers it ranks first
    assert page.locator("#rag-answer").count() == 1  # the tiny model's answer may be empty; the sources are real
    shot(page, tmp_path, "rag-answer")

    page.click("#documents tr[data-doc='topics/pass'] button.delete")
    assert "deleted topics/pass" in page.inner_text("#deleted")
    assert page.locator("#documents tr[data-doc='topics/pass']").count() == 0
    page.fill("#question", QUESTION)
    page.click("#ask")
    page.wait_for_selector("#sources", timeout=180_000)
    after = _sources(page)
    assert after and "topics/pass" not in after
    shot(page, tmp_path, "rag-after-delete")


def test_exporting_a_tiny_lora_run_shows_the_size_table_and_the_merge_check(tmp_path, serve_ui, page,
                                                                            tiny_model_dir):
    runs = tmp_path / "runs"
    folder = _finished_lora_run(runs, tiny_model_dir)
    url = serve_ui(runs)
    page.set_default_timeout(SLOW)
    login(page, url)
    page.click("nav >> text=Export")
    page.check("#int8")
    page.click("#export")
    page.wait_for_selector("#sizes", timeout=300_000)  # the page reloads itself when the export ends
    assert page.inner_text("#export-status") == "done"
    artifacts = page.eval_on_selector_all("#sizes tr[data-artifact]", "rows => rows.map(r => r.dataset.artifact)")
    assert artifacts == ["base", "adapter", "merged", "merged-int8"]
    report = json.loads((folder / "export" / "export.json").read_text())
    merged_mb = f"{report['sizes_bytes']['merged'] / 1e6:.2f}"
    assert merged_mb in page.inner_text("#sizes tr[data-artifact='merged']")
    check = page.inner_text("#checks")
    assert "merged vs base+adapter" in check and f"{report['merge_check']['max_abs_diff']:.2e}" in check
    assert "int8 vs merged" in check
    assert (folder / "export" / "merged" / "config.json").is_file()
    shot(page, tmp_path, "export-done")


def test_the_arena_streams_base_and_tuned_plus_rag_beside_the_others_and_keeps_them(tmp_path, serve_ui, page,
                                                                                    rag_index, tiny_model_dir):
    runs = tmp_path / "runs"
    folder = _finished_lora_run(runs, tiny_model_dir)
    url = serve_ui(runs, indexes=[index_copy(rag_index, tmp_path / "kb")])
    page.set_default_timeout(SLOW)
    login(page, url)
    page.goto(url + "/arena")
    assert page.input_value("#arena-index") == "kb"
    page.fill("#prompt", QUESTION)
    page.click("#ask")
    for system in ("base", "tuned", "rag", "tuned_rag"):
        page.wait_for_function(f"document.querySelector('#answer-{system}').dataset.done === '1'", timeout=240_000)
    shot(page, tmp_path, "arena-rag")
    kept = {k["system"]: k for k in map(json.loads, (folder / "arena.jsonl").read_text().splitlines())}
    assert set(kept) == {"base", "tuned", "base + RAG", "tuned + RAG"}
    for system, label in (("rag", "base + RAG"), ("tuned_rag", "tuned + RAG")):
        shown = page.eval_on_selector_all(f"#{system}-sources li", "items => items.map(i => i.dataset.doc)")
        assert shown and shown[0] == "topics/pass"  # retrieved from the index, best first
        assert kept[label]["sources"] == shown and kept[label]["index"] == "kb"
        assert kept[label]["answer"] == page.inner_text(f"#answer-{system}")
        assert "\x1e" not in page.inner_text(f"#answer-{system}")
    assert kept["tuned + RAG"]["weights"] == str(folder / "adapter")  # the adapter answered, with the context
    assert kept["base + RAG"]["weights"] is None
