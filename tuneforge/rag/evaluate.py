"""RAG evaluation: retrieval recall@k and MRR against gold passages, and answer accuracy.

A QA pair names its gold document and copies the answer-bearing sentence from it (``gold``). A
retrieved chunk is *relevant* when it comes from the gold document and covers at least half of that
sentence's characters (so a chunk that merely ends on the sentence's first word does not count).
recall@k is the share of questions with a relevant chunk in the top k; MRR is the mean of 1/rank of
the first relevant chunk within the top ``MAX_RANK`` (0 when none).

Answers are scored against the short reference ``answer``: ``answer_accuracy`` is the share of
generated answers that contain it (after lower-casing and dropping punctuation and articles), and
``token_f1`` the SQuAD token-overlap F1.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.errors import UserError

if TYPE_CHECKING:
    from tuneforge.rag.embed import Embedder
    from tuneforge.rag.store import Hit, VectorStore

MAX_RANK = 10
BUNDLED_QA = {"pydoc-topics": "pydoc_topics.jsonl"}


@dataclass
class QAPair:
    qid: str
    question: str
    answer: str
    doc_ids: list[str]
    gold: str


def load_qa(spec: str) -> tuple[list[QAPair], str]:
    """QA pairs from a bundled set name or a JSONL file; also returns the file path used."""
    if spec in BUNDLED_QA:
        path = Path(str(resources.files("tuneforge.rag") / "qa" / BUNDLED_QA[spec]))
    else:
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"rag.qa_file {spec!r}: no such file and not a bundled set ({', '.join(BUNDLED_QA)})")
    from tuneforge.rag.documents import jsonl_objects

    pairs = []
    for lineno, row in jsonl_objects(path, "with question, answer, gold and doc_id"):
        for key in ("question", "answer", "gold"):
            if not isinstance(row.get(key), str):
                raise UserError(f"{path}:{lineno}: {key}: {_expected('a string', row.get(key))}")
        pairs.append(QAPair(str(row.get("id", lineno)), row["question"], row["answer"],
                            _doc_ids(row, f"{path}:{lineno}"), row["gold"]))
    if not pairs:
        raise UserError(f"{path}: no QA pairs")
    return pairs, str(path)


def _expected(kind: str, value: object) -> str:
    return f"required field is missing (expected {kind})" if value is None else \
        f"expected {kind}, got {type(value).__name__}"


def _doc_ids(row: dict, where: str) -> list[str]:
    """The gold document ids of a QA row: ``doc_ids`` (a list of strings) or ``doc_id`` (a string)."""
    if "doc_ids" in row:
        ids = row["doc_ids"]
        if not (isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)):
            raise UserError(f"{where}: doc_ids: expected a non-empty list of document id strings, got {ids!r:.60}")
        return list(ids)
    doc_id = row.get("doc_id")
    if not isinstance(doc_id, str) or not doc_id:
        problem = "must not be empty" if doc_id == "" else _expected("a document id string (or doc_ids: a list)", doc_id)
        raise UserError(f"{where}: doc_id: {problem}")
    return [doc_id]


def span_pattern(text: str) -> re.Pattern[str]:
    """Match ``text`` with any run of whitespace where it has one (documents wrap lines)."""
    return re.compile(r"\s+".join(re.escape(w) for w in text.split()))


def relevant_chunks(store: VectorStore, qa: QAPair) -> set[str]:
    """Ids of the chunks that carry the gold passage (see module docstring)."""
    pattern = span_pattern(qa.gold)
    relevant: set[str] = set()
    for doc_id in qa.doc_ids:
        chunks = store.chunks_of(doc_id)
        if not chunks:
            continue
        # Chunks are exact slices of the document at known offsets: lay them back in place.
        length = max(c.end for c in chunks)
        buf = [" "] * length
        for c in chunks:
            buf[c.start:c.end] = c.text
        m = pattern.search("".join(buf))
        if m is None:
            continue
        need = 0.5 * (m.end() - m.start())
        for c in chunks:
            covered = min(c.end, m.end()) - max(c.start, m.start())
            if covered >= need:
                relevant.add(c.chunk_id)
    return relevant


def first_relevant_rank(hits: list[Hit], relevant: set[str]) -> int | None:
    for rank, hit in enumerate(hits, 1):
        if hit.chunk_id in relevant:
            return rank
    return None


@dataclass
class RetrievalResult:
    ranks: list[int | None]  # per question: rank of the first relevant chunk (None: not in top MAX_RANK)
    hits: list[list[Hit]] = field(default_factory=list)
    missing_gold: list[str] = field(default_factory=list)  # questions whose gold passage is not indexed

    def recall_at(self, k: int) -> list[float]:
        return [1.0 if r is not None and r <= k else 0.0 for r in self.ranks]

    def reciprocal_ranks(self) -> list[float]:
        return [1.0 / r if r is not None else 0.0 for r in self.ranks]


def evaluate_retrieval(store: VectorStore, embedder: Embedder, pairs: list[QAPair], k: int) -> RetrievalResult:
    """Retrieve for every question; find where the first relevant chunk ranks."""
    depth = max(k, MAX_RANK)
    vectors = embedder.embed([qa.question for qa in pairs])
    result = RetrievalResult(ranks=[])
    for qa, vec in zip(pairs, vectors, strict=True):
        relevant = relevant_chunks(store, qa)
        if not relevant:
            result.missing_gold.append(qa.qid)
        hits = store.search(vec, depth)
        result.hits.append(hits)
        result.ranks.append(first_relevant_rank(hits, relevant))
    return result


# --- answer scoring -----------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD normalisation)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def contains_answer(prediction: str, reference: str) -> float:
    ref = normalize_answer(reference)
    return 1.0 if ref and ref in normalize_answer(prediction) else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: the evaluation stage's definition when present, so RAG and eval rows agree."""
    try:
        from tuneforge.eval.metrics import token_f1 as shared
    except ImportError:
        shared = None
    if shared is not None:
        return float(shared(prediction, reference))
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common: dict[str, int] = {}
    for t in ref:
        common[t] = common.get(t, 0) + 1
    overlap = 0
    for t in pred:
        if common.get(t, 0) > 0:
            overlap += 1
            common[t] -= 1
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean_with_ci(
    values: list[float], seed: int = 0, resamples: int = 1000
) -> tuple[float, float | None, float | None]:
    """Mean and a 95% percentile-bootstrap confidence interval (seeded, so reruns agree).

    Uses the evaluation stage's ``bootstrap_ci`` when present, so intervals are computed alike.
    """
    try:
        from tuneforge.eval.metrics import bootstrap_ci
    except ImportError:
        bootstrap_ci = None
    if bootstrap_ci is not None and values:
        return bootstrap_ci(values, samples=resamples, seed=seed)
    if not values:
        return 0.0, 0.0, 0.0
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(n)) / n for _ in range(resamples))
    return sum(values) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
