"""The Arena: one prompt answered side by side, streamed, by a run's base model, its tuned weights and,
over a RAG index, the base model and the tuned one ("base + RAG" and "tuned + RAG", :func:`answer_rag`,
the CLI's ``rag ask``).

Models load through :func:`tuneforge.models.load_model` from the run's own recipe (``open_run``:
``trust_remote_code`` stays off for a folder from elsewhere) and stay loaded for the next question
(the two most recently used). One generation at a time per model object (a lock each): two browser
tabs asking the same model wait for each other instead of interleaving inside ``generate``.

Each answer is kept with the run it came from: one JSON line per answer in ``<run>/arena.jsonl`` (for
base + RAG and tuned + RAG also the index and the retrieved sources, with the ones the answer cites). A
RAG stream ends with ``SOURCES_MARK`` and the sources as JSON, which the page shows under the answer.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.models import load_model, load_tokenizer
from tuneforge.models.generate import stream_chat
from tuneforge.rag.answer import RagAnswer
from tuneforge.runs import open_run
from tuneforge.ui import indexes

ARENA_FILE = "arena.jsonl"
SYSTEMS = ("base", "tuned", "rag", "tuned_rag")
RAG_SYSTEM = "base + RAG"
TUNED_RAG_SYSTEM = "tuned + RAG"  # the adapter (or full tuned weights) answering with the retrieved context
SOURCES_MARK = "\x1e"  # record separator: never in generated text the page shows
MAX_NEW_TOKENS = 128
_KEEP = 2

_models: OrderedDict[tuple[str, str | None, str | None], tuple[Any, Any, threading.Lock]] = OrderedDict()
_loading = threading.Lock()


def _model(name: str, adapter: str | None = None, full: str | None = None):
    """(model, tokenizer, generation lock), loaded once (one load at a time) and kept for the next question."""
    key = (name, adapter, full)
    with _loading:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        tokenizer = load_tokenizer(name)
        model = load_model(full or name, adapter=adapter)
        _models[key] = (model, tokenizer, threading.Lock())
        while len(_models) > _KEEP:
            _models.popitem(last=False)
        return _models[key]


def answer(folder: Path, system: str, prompt: str, max_new_tokens: int | None = None) -> Iterator[str]:
    """``system``'s answer (``base`` or ``tuned``) for the run in ``folder`` as a stream of text pieces.

    Everything that can be refused is checked here, before the first piece: a mistake is an error
    response, never a half-sent stream. The answer is recorded in ``<run>/arena.jsonl`` once complete.
    """
    if system not in SYSTEMS[:2]:
        raise UserError(f"system {system!r}: pick one of {', '.join(SYSTEMS)}")
    if not prompt.strip():
        raise UserError("the prompt is empty")
    run = open_run(folder)
    weights = run.tuned_weights(required=True) if system == "tuned" else None
    adapter = str(weights.adapter) if weights and weights.adapter else None
    full = str(weights.model) if weights and weights.model else None
    model, tokenizer, lock = _model(run.recipe.model.name, adapter, full)
    return _stream(folder, model, tokenizer, lock, system, prompt, max_new_tokens or MAX_NEW_TOKENS, run.recipe.run.seed,
                   str(weights.path) if weights else None, run.recipe.model.name)


def _stream(folder: Path, model, tokenizer, lock: threading.Lock, system: str, prompt: str, max_new_tokens: int,
            seed: int, weights: str | None, base: str) -> Iterator[str]:
    pieces: list[str] = []
    with lock:
        for piece in stream_chat(model, tokenizer, [{"role": "user", "content": prompt}],
                                 max_new_tokens=max_new_tokens, seed=seed):
            pieces.append(piece)
            yield piece
    _keep(folder, {"system": system, "prompt": prompt, "answer": "".join(pieces), "model": base, "weights": weights})


def _keep(folder: Path, record: dict[str, Any]) -> None:
    record = {"time": _dt.datetime.now().isoformat(timespec="seconds"), **record}
    with open(folder / ARENA_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def answer_rag(folder: Path, index: indexes.Index, prompt: str, tuned: bool = False) -> Iterator[str]:
    """The run's base model (``tuned``: its tuned weights, "tuned + RAG") answering over ``index``
    (``tuneforge rag ask``), streamed, then the sources."""
    run = open_run(folder)
    recipe = indexes.recipe_for(run.recipe, index)
    recipe = recipe.model_copy(update={"rag": recipe.rag.model_copy(
        update={"max_new_tokens": min(recipe.rag.max_new_tokens, MAX_NEW_TOKENS)})})
    if not tuned:
        return _stream_rag(folder, ask_base(recipe, prompt), prompt, index, recipe.model.name, RAG_SYSTEM, None)
    weights = run.tuned_weights(required=True)
    # The tuned column's own model object (same key): the two take turns under its lock.
    model, tokenizer, lock = _model(recipe.model.name, str(weights.adapter) if weights.adapter else None,
                                    str(weights.model) if weights.model else None)
    items = indexes.stream_ask(recipe, prompt, loaded=(tokenizer, model), lock=lock)
    return _stream_rag(folder, items, prompt, index, recipe.model.name, TUNED_RAG_SYSTEM, str(weights.path))


def ask_base(recipe, question: str) -> Iterator:
    """``rag ask`` with the recipe's base model, the one the arena keeps loaded (see ``stream_ask``)."""
    model, tokenizer, lock = _model(recipe.model.name)
    return indexes.stream_ask(recipe, question, loaded=(tokenizer, model), lock=lock)


def _stream_rag(folder: Path, items: Iterator, prompt: str, index: indexes.Index, base: str, system: str,
                weights: str | None) -> Iterator[str]:
    pieces: list[str] = []
    result: RagAnswer | None = None
    for item in items:
        if isinstance(item, RagAnswer):
            result = item
        else:
            pieces.append(item)
            yield item
    assert result is not None
    sources = indexes.sources(result)
    _keep(folder, {"system": system, "prompt": prompt, "answer": "".join(pieces), "model": base,
                   "weights": weights, "index": index.name, "index_dir": str(index.path),
                   "sources": [s["doc_id"] for s in sources], "cited": result.cited})
    yield SOURCES_MARK + json.dumps(sources)
