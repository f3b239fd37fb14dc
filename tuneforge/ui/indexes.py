"""The RAG indexes the UI was given (``tuneforge ui --index DIR``), through the CLI's own RAG API.

The browser names an index only by its short name (the folder's name, ``-2`` ... when two folders share
one); any other name is refused, so a crafted path never reaches the store. Listing, deleting and
asking are :mod:`tuneforge.rag.pipeline`'s functions, the ones ``tuneforge rag list|delete|ask`` call,
with a :class:`~tuneforge.config.rag.RagConfig` whose embedder is the one that built the index
(read from its ``index.json``).

:func:`stream_ask` runs :func:`tuneforge.rag.pipeline.ask` in a worker thread and yields its answer
piece by piece (the CLI prints the same pieces through ``on_token``), then the whole
:class:`~tuneforge.rag.answer.RagAnswer` with its sources and citations.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.rag import RagConfig
from tuneforge.config.recipe import Recipe
from tuneforge.errors import UserError
from tuneforge.rag.answer import RagAnswer
from tuneforge.rag.contract import DocInfo
from tuneforge.rag.pipeline import ask, delete_sources, open_index
from tuneforge.rag.store import open_store, read_meta

_DONE = object()


@dataclass(frozen=True)
class Index:
    name: str
    path: Path


def named(folders: list[str | Path]) -> dict[str, Index]:
    """Each given folder under a short unique name (its folder name, then ``name-2``, ``name-3`` ...)."""
    out: dict[str, Index] = {}
    for folder in folders:
        path = Path(folder).resolve()
        if any(i.path == path for i in out.values()):
            continue
        stem, name, n = path.name or "index", path.name or "index", 2
        while name in out:
            name, n = f"{stem}-{n}", n + 1
        out[name] = Index(name, path)
    return out


def pick(indexes: dict[str, Index], name: str) -> Index:
    """The index called ``name``: only one of those given on the command line."""
    if name not in indexes:
        known = ", ".join(indexes) or "none: start the UI with --index DIR"
        raise UserError(f"index {name!r}: not one of the indexes this UI was given ({known})")
    return indexes[name]


def config(index: Index, base: RagConfig | None = None) -> RagConfig:
    """``base`` (or the defaults) pointed at ``index`` with the embedder and store that built it."""
    meta = read_meta(index.path)
    if meta is None:
        raise UserError(f"{index.path}: no RAG index here; build one with `tuneforge rag index DOCS "
                        f"--index-dir {index.path}`")
    update = {"index_dir": str(index.path), "embedding_model": meta.get("embedding_model", "all-minilm-l6-v2"),
              "store": meta.get("store", "lancedb")}
    return (base or RagConfig()).model_copy(update=update)


def documents(index: Index) -> dict[str, DocInfo]:
    """Every document in the index, by id (``tuneforge rag list``)."""
    return open_store(config(index)).documents()


def delete(index: Index, doc_id: str) -> int:
    """Delete one document by its exact id (``tuneforge rag delete ID``); returns its chunk count."""
    if doc_id not in documents(index):
        raise UserError(f"{doc_id!r}: no such document in index {index.name!r}")
    return delete_sources(config(index), [doc_id]).get(doc_id, 0)


def recipe_for(recipe: Recipe, index: Index) -> Recipe:
    """A run's recipe asking ``index`` with its base model (no adapter: "base + RAG")."""
    model = recipe.model.model_copy(update={"adapter": None})
    return recipe.model_copy(update={"rag": config(index, recipe.rag), "model": model})


def stream_ask(recipe: Recipe, question: str, generate: bool = True, loaded: tuple | None = None,
               lock: threading.Lock | None = None) -> Iterator[str | RagAnswer]:
    """The answer's pieces as ``ask`` generates them, then the whole RagAnswer (sources, citations).

    ``loaded`` is ``(tokenizer, model)`` from the arena's loaded models and ``lock`` that model's
    generation lock: one model object never generates for two questions at once, and loading stays
    with the arena (two threads loading weights at the same time break transformers' loader).
    What can be refused (an empty question, a missing or empty index) is refused before this returns,
    so a mistake is an error response, never a half-sent stream.
    """
    if not question.strip():
        raise UserError("the question is empty")
    store, _ = open_index(recipe.rag)
    if store.count() == 0:
        raise UserError(f"{recipe.rag.index_dir}: the index is empty; add documents with `tuneforge rag index`")
    pieces: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with lock or contextlib.nullcontext():
                pieces.put(ask(recipe, question, generate=generate, on_token=pieces.put, loaded=loaded))
        except BaseException as exc:  # handed to the reader, which raises it in the request's thread
            pieces.put(exc)
        pieces.put(_DONE)

    threading.Thread(target=work, daemon=True, name="rag-ask").start()
    return _drain(pieces)


def _drain(pieces: queue.Queue) -> Iterator[str | RagAnswer]:
    while (item := pieces.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item


def sources(result: RagAnswer) -> list[dict]:
    """The retrieved chunks, numbered as the prompt numbered them, each marked when the answer cites it."""
    return [{"n": i, "doc_id": h.doc_id, "title": h.title, "score": round(h.score, 3), "cited": i in result.cited,
             "text": h.text[:300]} for i, h in enumerate(result.hits, 1)]
