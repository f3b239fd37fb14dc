"""The RAG pieces wired together from a recipe: what the CLI (and other stages) call.

* :func:`index_sources` — ingest files, folders or bundled sets into ``rag.index_dir``;
* :func:`delete_sources` — forget documents by id, file or folder;
* :func:`ask` — retrieve and answer one question with citations;
* :func:`evaluate_rag` — recall@k, MRR and answer accuracy, written as "base + RAG" / "tuned + RAG" rows
  of ``<run>/eval/results.json`` for `tuneforge compare`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge import atomic, locks
from tuneforge.errors import UserError
from tuneforge.rag.documents import BUNDLED_SETS, file_id, load_documents
from tuneforge.rag.embed import Embedder
from tuneforge.rag.index import IndexReport, index_documents
from tuneforge.rag.store import VectorStore, open_store, read_meta

if TYPE_CHECKING:
    from tuneforge.config.rag import RagConfig
    from tuneforge.config.recipe import Recipe
    from tuneforge.rag.answer import RagAnswer
    from tuneforge.runs import Run

log = logging.getLogger(__name__)


_EMBEDDERS: dict[tuple[str, int], Embedder] = {}


def load_embedder(cfg: RagConfig) -> Embedder:
    """The configured embedder, loaded once per process (a server or notebook asks many questions)."""
    key = (cfg.embedding_model, cfg.embedding_batch_size)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = Embedder(cfg.embedding_model, batch_size=cfg.embedding_batch_size)
    return _EMBEDDERS[key]


def open_index(cfg: RagConfig, embedder: Embedder | None = None, create: bool = False) -> tuple[VectorStore, Embedder]:
    """The store in ``cfg.index_dir`` and the embedder that built it."""
    embedder = embedder or load_embedder(cfg)
    return open_store(cfg, embedder.name, embedder.dim, create=create), embedder


@contextlib.contextmanager
def writing(cfg: RagConfig) -> Iterator[None]:
    """Be the one process writing ``cfg.index_dir``; wait up to ``cfg.write_wait_s`` for another writer.

    Two writers would corrupt the index: compaction (``optimize(..., delete_unverified=True)``) deletes
    data files that the other writer has written but not yet committed. Readers need no lock.
    """
    with locks.hold(cfg.index_dir, "the RAG index", wait_s=cfg.write_wait_s):
        yield


def index_sources(cfg: RagConfig, sources: list[str], embedder: Embedder | None = None,
                  progress: bool = True) -> IndexReport:
    """Ingest ``sources`` (files, folders, bundled set names); changed documents replace their chunks."""
    docs = load_documents(sources)
    embedder = embedder or load_embedder(cfg)  # the slow part, before waiting for another writer
    with writing(cfg):
        store, embedder = open_index(cfg, embedder, create=True)
        prefixes = prune_prefixes(sources) if cfg.prune else None
        return index_documents(store, embedder, docs, cfg.chunk_tokens, cfg.chunk_overlap, progress=progress,
                               prune_prefixes=prefixes)


def prune_prefixes(sources: list[str]) -> list[str]:
    """Id prefixes that ``sources`` fully describe: a folder, a JSONL file's lines, a whole bundled set."""
    out = []
    for src in sources:
        path = Path(src)
        if src in BUNDLED_SETS:
            out.append(f"{src}/")
        elif path.is_dir():
            out.append(file_id(path).rstrip("/") + "/")
        elif path.is_file() and path.suffix.lower() == ".jsonl":
            out.append(file_id(path) + "#")
    return out


def resolve_doc_ids(known: list[str], targets: list[str]) -> list[str]:
    """Document ids named by ``targets``: exact ids, files (by their stable id), folders or ``prefix/*``."""
    found: list[str] = []
    for target in targets:
        matches: list[str] = []
        if target in known:
            matches = [target]
        elif target.endswith("*"):
            matches = [d for d in known if d.startswith(target[:-1])]
        else:
            path = Path(target)
            if path.exists():
                fid = file_id(path)
                if path.is_dir():
                    matches = [d for d in known if d.startswith(fid.rstrip("/") + "/")]
                else:  # a file, and the documents of its JSONL lines
                    matches = [d for d in known if d == fid or d.startswith(fid + "#")]
        if not matches:
            close = difflib.get_close_matches(target, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see `tuneforge rag list`"
            raise UserError(f"{target}: no such document in the index{hint}")
        found += [m for m in matches if m not in found]
    return found


def delete_sources(cfg: RagConfig, targets: list[str], everything: bool = False) -> dict[str, int]:
    """Delete documents (and every chunk of them) durably; return chunks removed per document.

    Emptying the index takes ``everything=True`` (``rag delete --all``): a stray ``'*'`` or a folder
    holding every indexed file must not wipe the index by accident.
    """
    if read_meta(cfg.index_dir) is None:
        open_store(cfg)  # raises the "no RAG index here" error (and creates nothing)
    with writing(cfg):
        store = open_store(cfg)
        docs = store.documents()
        ids = resolve_doc_ids(sorted(docs), targets) if targets or not everything else sorted(docs)
        if len(ids) == len(docs) and ids and not everything:
            raise UserError(f"{', '.join(targets)}: names every document in the index ({len(docs)}); "
                            "to delete them all, run `tuneforge rag delete --all`")
        store.delete_documents(ids)
        store.optimize()  # also drops old table versions, so the deleted text is gone from disk too
    return {d: docs[d].chunks for d in ids}


def load_answer_model(recipe: Recipe, adapter: str | None = None):
    """Tokenizer and model (with ``adapter`` when given; ``""`` forces the bare base model)."""
    from tuneforge.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    model = load_model(recipe.model, adapter=adapter)
    return tokenizer, model


def ask(recipe: Recipe, question: str, generate: bool = True,
        on_token: Callable[[str], None] | None = None, loaded: tuple | None = None) -> RagAnswer:
    """Retrieve ``rag.top_k`` chunks and answer with the base model or the recipe's adapter.

    With ``on_token``, the answer is streamed to it piece by piece as it is generated (the CLI prints
    it live); the returned answer holds the whole text and its parsed citations either way. ``loaded``
    is a ``(tokenizer, model)`` already in memory (the browser UI keeps its models loaded).
    """
    from tuneforge.models.generate import stream_chat
    from tuneforge.rag.answer import RagAnswer, build_messages, parse_citations, retrieve

    cfg = recipe.rag
    store, embedder = open_index(cfg)
    if store.count() == 0:
        raise UserError(f"{cfg.index_dir}: the index is empty; add documents with `tuneforge rag index`")
    hits = retrieve(store, embedder, question, cfg.top_k)
    if not generate:
        return RagAnswer(question, "", hits)
    tokenizer, model = loaded or load_answer_model(recipe)
    messages = build_messages(question, hits, tokenizer, cfg.max_context_tokens)
    pieces = []
    for piece in stream_chat(model, tokenizer, messages, max_new_tokens=cfg.max_new_tokens, seed=recipe.run.seed):
        pieces.append(piece)
        if on_token is not None:
            on_token(piece)
    text = "".join(pieces).strip()
    return RagAnswer(question, text, hits, parse_citations(text, len(hits)))


def _answer_rows(
    recipe: Recipe, pairs: list, retrieval, adapter: str, names: tuple[str, str], task: str, extra: dict
) -> tuple[list, list[dict]]:
    """Rows for one model (base or tuned): with retrieved sources, and closed-book when asked."""
    from tuneforge.eval.results import MetricValue, ResultRow
    from tuneforge.rag.answer import build_messages, generate_answers
    from tuneforge.rag.evaluate import contains_answer, mean_with_ci, token_f1

    cfg = recipe.rag
    tokenizer, model = load_answer_model(recipe, adapter=adapter)
    variants = [(names[0], [build_messages(qa.question, hits[: cfg.top_k], tokenizer, cfg.max_context_tokens)
                            for qa, hits in zip(pairs, retrieval.hits, strict=True)])]
    if cfg.closed_book:  # the same questions without retrieval: what RAG adds
        variants.append((names[1], [[{"role": "user", "content": f"{qa.question}\nAnswer briefly."}] for qa in pairs]))
    rows, predictions = [], []
    for system, conversations in variants:
        answers = generate_answers(model, tokenizer, conversations, cfg.max_new_tokens, cfg.batch_size)
        acc = [contains_answer(a, qa.answer) for a, qa in zip(answers, pairs, strict=True)]
        f1 = [token_f1(a, qa.answer) for a, qa in zip(answers, pairs, strict=True)]
        metrics = dict(extra["retrieval_metrics"]) if system == names[0] else {}
        for name, values in (("answer_accuracy", acc), ("token_f1", f1)):
            m, lo, hi = mean_with_ci(values, recipe.run.seed)
            metrics[name] = MetricValue(m, lo, hi, len(pairs))
        prompt_tokens = sum(
            len(tokenizer(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
                          add_special_tokens=False)["input_ids"]) for c in conversations
        ) / len(conversations)
        rows.append(ResultRow(system=system, task=task, metrics=metrics, prompt_tokens_per_request=prompt_tokens,
                              extra={k: v for k, v in extra.items() if k != "retrieval_metrics"}
                              | {"retrieval": system == names[0]}))
        for qa, hits, answer, a, f in zip(pairs, retrieval.hits, answers, acc, f1, strict=True):
            predictions.append({"system": system, "id": qa.qid, "question": qa.question, "reference": qa.answer,
                                "prediction": answer, "correct": a, "token_f1": f,
                                "retrieved": [h.chunk_id for h in hits[: cfg.top_k]] if system == names[0] else []})
    return rows, predictions


def evaluate_rag(recipe: Recipe, run: Run) -> dict[str, dict[str, float]]:
    """Score retrieval, then answers of the base model (and the tuned one, given an adapter).

    Rows: "base + RAG" (and "tuned + RAG"), plus the same questions closed-book as "base zero-shot"
    (and "tuned") unless ``rag.closed_book`` is off, so the table shows what retrieval adds. Writes
    ``eval/results.json``, ``eval/rag_predictions.jsonl`` and metrics.jsonl entries in the run
    folder; returns {system: {metric: value}}.
    """
    from tuneforge.eval.results import MetricValue, ResultRow, write_results
    from tuneforge.rag.evaluate import evaluate_retrieval, load_qa, mean_with_ci

    cfg = recipe.rag
    pairs, qa_path = load_qa(cfg.qa_file)
    if cfg.max_questions:
        pairs = pairs[: cfg.max_questions]
    run.add_inputs([qa_path])
    store, embedder = open_index(cfg)
    retrieval = evaluate_retrieval(store, embedder, pairs, cfg.top_k)
    if retrieval.missing_gold:
        log.warning("gold passage not in the index for %d questions: %s", len(retrieval.missing_gold),
                    ", ".join(retrieval.missing_gold[:10]))
    seed = recipe.run.seed
    task = f"rag:{Path(qa_path).stem}"
    retrieval_metrics: dict[str, MetricValue] = {}
    for k in sorted({1, cfg.top_k, 10}):
        m, lo, hi = mean_with_ci(retrieval.recall_at(k), seed)
        retrieval_metrics[f"recall@{k}"] = MetricValue(m, lo, hi, len(pairs))
    m, lo, hi = mean_with_ci(retrieval.reciprocal_ranks(), seed)
    retrieval_metrics["mrr"] = MetricValue(m, lo, hi, len(pairs))
    extra = {"top_k": cfg.top_k, "index_dir": str(cfg.index_dir), "embedding_model": cfg.embedding_model,
             "chunks": store.count(), "missing_gold": retrieval.missing_gold, "retrieval_metrics": retrieval_metrics}
    rows: list[ResultRow] = []
    predictions: list[dict] = []
    if cfg.answer_mode == "retrieval-only":
        rows.append(ResultRow(system="retrieval", task=task, metrics=retrieval_metrics,
                              extra={k: v for k, v in extra.items() if k != "retrieval_metrics"}))
        for qa, hits, rank in zip(pairs, retrieval.hits, retrieval.ranks, strict=True):
            predictions.append({"system": "retrieval", "id": qa.qid, "question": qa.question, "gold_rank": rank,
                                "retrieved": [h.chunk_id for h in hits[: cfg.top_k]]})
    else:
        models = [("", ("base + RAG", "base zero-shot"))]
        if recipe.model.adapter:
            models.append((recipe.model.adapter, ("tuned + RAG", "tuned")))
        for adapter, names in models:
            new_rows, new_preds = _answer_rows(recipe, pairs, retrieval, adapter, names, task, extra)
            rows += new_rows
            predictions += new_preds
    summary: dict[str, dict[str, float]] = {}
    for row in rows:
        summary[row.system] = {k: v.value for k, v in row.metrics.items()}
        run.log_metrics(split="rag", system=row.system, **summary[row.system])
    write_results(run.path, rows)
    atomic.write_text(run.file("eval", "rag_predictions.jsonl"),
                      "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    return summary
