"""Base + RAG in the Arena shares the arena's loaded base model instead of loading its own copy.

Two threads loading weights at once break transformers' loader ("Cannot copy out of meta tensor"),
which the three arena contenders did on the bundled model; the arena loads each model once, under
one lock, and every answer from the same model object takes its turn.
"""

from __future__ import annotations

import json

from tests.ui.conftest import index_copy
from tuneforge.rag.answer import RagAnswer
from tuneforge.ui import arena, indexes


def test_base_plus_rag_uses_the_arenas_loaded_model_and_keeps_its_sources(tmp_path, rag_index, tiny_model_dir,
                                                                          monkeypatch):
    from tests.export.helpers import make_lora_run
    from tuneforge.rag import pipeline

    def no_second_load(*args, **kwargs):
        raise AssertionError("base + RAG loaded its own copy of the model")

    monkeypatch.setattr(pipeline, "load_answer_model", no_second_load)
    monkeypatch.setattr(arena, "MAX_NEW_TOKENS", 8)
    folder = make_lora_run(tmp_path / "runs" / "tuned", tiny_model_dir)
    index = indexes.named([index_copy(rag_index, tmp_path / "kb")])["kb"]
    base = "".join(arena.answer(folder, "base", "What does pass do?"))
    pieces = list(arena.answer_rag(folder, index, "What does the pass statement do?"))
    assert pieces[-1].startswith(arena.SOURCES_MARK)
    shown = [s["doc_id"] for s in json.loads(pieces[-1][1:])]
    assert shown[0] == "topics/pass"
    kept = [json.loads(line) for line in (folder / "arena.jsonl").read_text().splitlines()]
    assert [k["system"] for k in kept] == ["base", "base + RAG"]
    assert kept[0]["answer"] == base and kept[1]["answer"] == "".join(pieces[:-1])
    assert kept[1]["sources"] == shown and kept[1]["index"] == "kb"


def test_retrieval_only_needs_no_model(tmp_path, rag_index):
    from tuneforge.config.recipe import Recipe

    index = indexes.named([index_copy(rag_index, tmp_path / "kb")])["kb"]
    recipe = Recipe().model_copy(update={"rag": indexes.config(index)})
    items = list(indexes.stream_ask(recipe, "How does a while loop end?", generate=False))
    assert len(items) == 1 and isinstance(items[0], RagAnswer)
    assert items[0].answer == "" and items[0].hits[0].doc_id in ("topics/while", "topics/break")


def test_tuned_plus_rag_answers_with_the_tuned_model_over_the_index_and_is_kept(tmp_path, rag_index, tiny_model_dir,
                                                                                monkeypatch):
    from tests.export.helpers import make_lora_run

    monkeypatch.setattr(arena, "MAX_NEW_TOKENS", 8)
    folder = make_lora_run(tmp_path / "runs" / "tuned", tiny_model_dir)
    index = indexes.named([index_copy(rag_index, tmp_path / "kb")])["kb"]
    asked_with = []
    real_stream_ask = indexes.stream_ask

    def spy(recipe, question, generate=True, loaded=None, lock=None):
        asked_with.append(loaded[1])
        return real_stream_ask(recipe, question, generate, loaded, lock)

    monkeypatch.setattr(indexes, "stream_ask", spy)
    pieces = list(arena.answer_rag(folder, index, "What does the pass statement do?", tuned=True))
    tuned_model = arena._model(str(tiny_model_dir), str(folder / "adapter"))[0]
    assert asked_with == [tuned_model]  # the adapter's model, the one the tuned column answers with
    assert tuned_model is not arena._model(str(tiny_model_dir))[0]
    shown = [s["doc_id"] for s in json.loads(pieces[-1][1:])]
    assert shown[0] == "topics/pass"
    (kept,) = [json.loads(line) for line in (folder / "arena.jsonl").read_text().splitlines()]
    assert kept["system"] == "tuned + RAG" and kept["weights"] == str(folder / "adapter")
    assert kept["answer"] == "".join(pieces[:-1]) and kept["sources"] == shown and kept["index"] == "kb"
