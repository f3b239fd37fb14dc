"""The checks every example goes through: empty and low-information answers, duplicates, conflicts,
PII, token length, near-duplicates and leaks between splits.

Each check records a ``Problem`` (``file:line: field: message``) in a ``CheckState``, and where the
recipe says so drops the row, counted by reason: nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tuneforge.config.data import DataConfig
from tuneforge.data.example import ChatExample
from tuneforge.data.pii import NAMES as PII_NAMES
from tuneforge.data.pii import clip, find_pii, redact
from tuneforge.data.problems import Problem
from tuneforge.data.quality import histogram, is_low_information, near_duplicate_pairs, token_lengths


@dataclass
class CheckState:
    """What the checks found so far."""

    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    def problem(self, kind: str, file: str, line: int | None, fld: str, message: str, drop: str | None = None) -> None:
        self.problems.append(Problem(kind, file, line, fld, message))
        if drop:
            self.dropped[drop] += 1


def check_examples(examples: list[ChatExample], cfg: DataConfig, tokenizer: Any, st: CheckState, drop: bool = True,
                   limit: int | None = None) -> list[ChatExample]:
    """Every check; with ``drop`` remove what the config says to remove (each counted). With ``limit``,
    examples are taken in order until ``limit`` pass: PII and token lengths are checked on those only."""
    kept = _check_rows(examples, cfg, st, drop)
    final: list[ChatExample] = []
    lengths: list[int] = []
    tok_name = "estimated"
    pii: Counter[str] = Counter()
    over = examined = 0
    for start in range(0, len(kept), 512):
        if limit is not None and len(final) >= limit:
            break
        chunk = kept[start : start + 512]
        examined += len(chunk)
        _check_pii(chunk, cfg, st, drop, pii)
        chunk_lengths, tok_name = token_lengths(chunk, tokenizer)
        lengths += chunk_lengths
        for ex, n in zip(chunk, chunk_lengths, strict=True):
            if n > cfg.max_length:
                over += 1
                st.problem("too_long", ex.file, ex.line, "(example)", f"{n} tokens, over data.max_length {cfg.max_length}",
                           drop="longer than max_length" if drop else None)
                if drop:
                    continue
            final.append(ex)
    if limit is not None:
        unused = (len(kept) - examined) + max(0, len(final) - limit)  # never looked at, or past the limit
        final = final[:limit]
        if unused:
            st.dropped["over max_examples (seeded sample)"] += unused
    st.extra.update(
        token_lengths={"tokenizer": tok_name, "max_length": cfg.max_length, "over_max_length": over,
                       "examined": examined, **histogram(lengths)},
        pii={"counts": dict(sorted(pii.items())), "redacted": bool(cfg.redact_pii and drop)},
    )
    return final


def _check_pii(examples: list[ChatExample], cfg: DataConfig, st: CheckState, drop: bool, counts: Counter[str]) -> None:
    redacting = cfg.redact_pii and drop
    for ex in examples:
        for i, m in enumerate(ex.messages):
            kinds = [k for k, _, _ in find_pii(m["content"])]
            if not kinds:
                continue
            counts.update(kinds)
            if redacting:
                m["content"], _ = redact(m["content"])
                for k in sorted(set(kinds)):
                    st.changed[f"PII redacted ({k})"] += 1
            else:
                names = ", ".join(PII_NAMES[k] for k in sorted(set(kinds)))
                st.problem("pii", ex.file, ex.line, f"messages[{i}].content", f"contains {names} (redact with --redact-pii)")
        if redacting:  # task and label are written too (meta, label balance): redact them on their own
            ex.task = redact(ex.task)[0]
            if isinstance(ex.label, str):
                ex.label = redact(ex.label)[0]
            if ex.label_set:
                ex.label_set = [redact(x)[0] if isinstance(x, str) else x for x in ex.label_set]


def _check_rows(examples: list[ChatExample], cfg: DataConfig, st: CheckState, drop: bool) -> list[ChatExample]:
    """Empty and low-information answers, exact duplicates and conflicting answers."""
    kept: list[ChatExample] = []
    seen: dict[str, ChatExample] = {}
    by_input: dict[str, ChatExample] = {}
    low_info = exact = conflicting = 0
    for ex in examples:
        f, ln = ex.file, ex.line
        if not ex.answer.strip():
            st.problem("empty_response", f, ln, "messages[-1].content", "the answer is empty or whitespace",
                       drop="empty answer" if drop else None)
            if drop:
                continue
        if any(m["role"] == "user" and not m["content"].strip() for m in ex.messages):
            st.problem("empty_prompt", f, ln, "messages", "a user message is empty", drop="empty prompt" if drop else None)
            if drop:
                continue
        if ex.label_set is None and is_low_information(ex.answer):
            low_info += 1
            dropping = drop and cfg.drop_low_information
            st.problem("low_information", f, ln, "messages[-1].content",
                       f"low-information answer {clip(ex.answer.strip(), 30)!r}",
                       drop="low-information answer" if dropping else None)
            if dropping:
                continue
        first = seen.get(ex.id)
        if first is not None:
            exact += 1
            dropping = drop and cfg.dedupe
            st.problem("duplicate", f, ln, "(example)", f"exact duplicate of {first.where}",
                       drop="exact duplicate" if dropping else None)
            if dropping:
                continue
        seen.setdefault(ex.id, ex)
        other = by_input.setdefault(ex.input_key, ex)
        if other is not ex and other.answer != ex.answer:
            conflicting += 1
            st.problem("conflicting", f, ln, "messages[-1].content",
                       f"same input as {other.where} but a different answer ({clip(ex.answer, 20)!r} vs "
                       f"{clip(other.answer, 20)!r})")
        kept.append(ex)
    st.extra.update(low_information=low_info, exact=exact, conflicting=conflicting)
    return kept


def near_duplicates(examples: list[ChatExample], st: CheckState) -> list[tuple[int, int, float]]:
    pairs = near_duplicate_pairs([e.text() for e in examples])
    for i, j, jac in pairs:
        a, b = examples[i], examples[j]
        if a.id != b.id:
            st.problem("near_duplicate", b.file, b.line, "(example)", f"near-duplicate of {a.where} (Jaccard {jac})")
    st.extra["near_pairs"] = [p for p in pairs if examples[p[0]].id != examples[p[1]].id]
    return pairs


def check_leaks(examples: list[ChatExample], st: CheckState) -> None:
    """In a prepared folder, the same example in two splits is a leak (test data seen in training)."""
    split_of: dict[str, ChatExample] = {}
    for ex in examples:
        other = split_of.setdefault(ex.id, ex)
        if other.extra_meta["split"] != ex.extra_meta["split"]:
            st.problem("leak", ex.file, ex.line, "(example)", f"the same example is in {other.where}")
