"""Raw data -> validated, templated, deduplicated, split chat JSONL with a quality report.

``prepare_data`` is the one entry point (the CLI and the quickstart call it). Every row that is
dropped or changed is counted by reason; every problem is kept with ``file:line: field: message``;
``strict`` turns any problem into a failure. Output is deterministic: the same input, recipe and seed
give byte-identical files.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tuneforge.data.config import DataConfig
from tuneforge.data.example import Example
from tuneforge.data.formats import detect_format, to_messages
from tuneforge.data.io import read_examples, write_examples, write_json
from tuneforge.data.pii import NAMES as PII_NAMES
from tuneforge.data.pii import find_pii, redact
from tuneforge.data.problems import Problem, RowError
from tuneforge.data.quality import (
    histogram,
    is_low_information,
    label_balance,
    near_duplicate_pairs,
    token_lengths,
)
from tuneforge.data.readers import read_rows
from tuneforge.data.sources import BUNDLED, bundled_dataset_path, bundled_template_args
from tuneforge.data.split import SPLITS, assign, group_keys, sample
from tuneforge.data.templates import Skip, get_template
from tuneforge.errors import UserError

log = logging.getLogger(__name__)
MAX_LISTED_PROBLEMS = 1000


@dataclass
class PreparedData:
    train: Path
    val: Path
    test: Path
    report: dict[str, Any]
    manifest: dict[str, Any]


@dataclass
class _State:
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


def resolve_input(cfg: DataConfig) -> Path:
    """``cfg.path`` as a file or folder (bundled dataset names are looked up in their packages)."""
    if cfg.path in BUNDLED and not Path(cfg.path).exists():
        return bundled_dataset_path(cfg.path)
    return Path(cfg.path)


def is_prepared_folder(path: Path) -> bool:
    return path.is_dir() and all((path / f"{s}.jsonl").is_file() for s in SPLITS)


def _convert(cfg: DataConfig, path: Path, st: _State) -> tuple[list[Example], str]:
    """Read and convert every row; returns examples and the format used."""
    template = get_template(cfg.template) if cfg.template else None
    targs = template.args({**bundled_template_args(cfg.path, cfg.template), **cfg.template_args}) if template else {}
    fmt = "raw" if template and cfg.format == "auto" else cfg.format
    if fmt == "raw" and template is None:
        raise UserError("data.template: format 'raw' needs a template (see `tuneforge data templates`)")
    examples: list[Example] = []
    for row in tqdm(read_rows(path, cfg.max_line_bytes, cfg.split), desc="reading", unit=" rows", leave=False,
                    disable=None):
        st.rows += 1
        if row.problem is not None:
            st.problems.append(row.problem)
            st.dropped["malformed row"] += 1
            continue
        rec = row.record or {}
        try:
            if template is not None:
                pair = template.apply(rec, targs)
                messages = [{"role": "user", "content": pair.prompt}, {"role": "assistant", "content": pair.answer}]
                ex = Example(messages, template.name, pair.label, pair.label_set, row.file, row.line)
            else:
                if fmt == "auto":
                    detected = detect_format(rec)
                    if detected is None:
                        raise UserError(
                            f"{row.file}:{row.line}: (record): cannot tell the format from fields "
                            f"{sorted(rec)[:8]}; raw records need --template (see `tuneforge data templates`) "
                            "or set --format"
                        )
                    fmt = detected
                messages = to_messages(rec, fmt)
                meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
                ex = Example(messages, str(meta.get("task") or fmt), meta.get("label"), meta.get("label_set"),
                             row.file, row.line)
        except Skip as s:
            st.dropped[f"left out by template ({s})"] += 1
            continue
        except RowError as err:
            if not examples and st.rows == 1 and err.message.startswith("missing: template"):
                # The first record lacks a template field: a column-name mistake, not a bad row.
                raise UserError(f"{row.file}:{row.line}: {err.field}: {err.message}") from None
            st.problem(err.kind, row.file, row.line, err.field, err.message, drop=err.kind.replace("_", " ") + " row")
            continue
        if cfg.system_prompt and messages[0]["role"] != "system":
            ex.messages = [{"role": "system", "content": cfg.system_prompt}, *messages]
        examples.append(ex)
    return examples, fmt


def check_examples(examples: list[Example], cfg: DataConfig, tokenizer: Any, st: _State, drop: bool = True,
                   limit: int | None = None) -> list[Example]:
    """Every check; with ``drop`` remove what the config says to remove (each counted). With ``limit``,
    examples are taken in order until ``limit`` pass: PII and token lengths are checked on those only."""
    kept = _check_rows(examples, cfg, st, drop)
    final: list[Example] = []
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


def _check_pii(examples: list[Example], cfg: DataConfig, st: _State, drop: bool, counts: Counter[str]) -> None:
    for ex in examples:
        for i, m in enumerate(ex.messages):
            kinds = [k for k, _, _ in find_pii(m["content"])]
            if not kinds:
                continue
            counts.update(kinds)
            if cfg.redact_pii and drop:
                m["content"], _ = redact(m["content"])
                for k in sorted(set(kinds)):
                    st.changed[f"PII redacted ({k})"] += 1
                if i == len(ex.messages) - 1 and ex.label is not None:
                    ex.label = m["content"]
            else:
                names = ", ".join(PII_NAMES[k] for k in sorted(set(kinds)))
                st.problem("pii", ex.file, ex.line, f"messages[{i}].content", f"contains {names} (redact with --redact-pii)")


def _check_rows(examples: list[Example], cfg: DataConfig, st: _State, drop: bool) -> list[Example]:
    """Empty and low-information answers, exact duplicates and conflicting answers."""
    kept: list[Example] = []
    seen: dict[str, Example] = {}
    by_input: dict[str, Example] = {}
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
                       f"low-information answer {ex.answer.strip()[:30]!r}",
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
                       f"same input as {other.where} but a different answer ({ex.answer[:20]!r} vs {other.answer[:20]!r})")
        kept.append(ex)
    st.extra.update(low_information=low_info, exact=exact, conflicting=conflicting)
    return kept


def _near(examples: list[Example], st: _State) -> list[tuple[int, int, float]]:
    pairs = near_duplicate_pairs([e.text() for e in examples])
    for i, j, jac in pairs:
        a, b = examples[i], examples[j]
        if a.id != b.id:
            st.problem("near_duplicate", b.file, b.line, "(example)", f"near-duplicate of {a.where} (Jaccard {jac})")
    st.extra["near_pairs"] = [p for p in pairs if examples[p[0]].id != examples[p[1]].id]
    return pairs


def _report(cfg: DataConfig, fmt: str, st: _State, kept: list[Example], seed: int) -> dict[str, Any]:
    st.problems.sort(key=lambda p: (p.file, p.line or 0, p.kind))  # stable: same order on every run
    kinds = Counter(p.kind for p in st.problems)
    near = st.extra.get("near_pairs", [])
    return {
        "input": cfg.path, "format": fmt, "template": cfg.template, "seed": seed,
        "counts": {"rows": st.rows, "kept": len(kept)},
        "dropped": dict(sorted(st.dropped.items())), "changed": dict(sorted(st.changed.items())),
        "problem_count": len(st.problems), "problem_kinds": dict(sorted(kinds.items())),
        "problems": [p.render() for p in st.problems[:MAX_LISTED_PROBLEMS]],
        "token_lengths": st.extra.get("token_lengths", {}), "labels": label_balance(kept),
        "duplicates": {"exact": st.extra.get("exact", 0), "near_pairs": len(near),
                       "conflicting": st.extra.get("conflicting", 0)},
        "low_information": st.extra.get("low_information", 0), "pii": st.extra.get("pii", {"counts": {}, "redacted": False}),
    }


def _fail_if_strict(cfg: DataConfig, st: _State, report_path: Path | None) -> None:
    if not cfg.strict or not st.problems:
        return
    st.problems.sort(key=lambda p: (p.file, p.line or 0, p.kind))
    lines = [p.render() for p in st.problems[:30]]
    if len(st.problems) > 30:
        lines.append(f"... and {len(st.problems) - 30} more" + (f" in {report_path}" if report_path else ""))
    raise UserError(f"{len(st.problems)} data problem(s) and --strict is on (data.strict)", lines)


def validate_data(cfg: DataConfig, tokenizer: Any = None, seed: int = 42) -> dict[str, Any]:
    """The quality report for ``cfg.path`` without writing anything (what prepare would drop, and why)."""
    path = resolve_input(cfg)
    st = _State()
    if is_prepared_folder(path):
        examples, fmt = _read_prepared(path, st), "prepared"
        kept = check_examples(examples, cfg, tokenizer, st, drop=False)
        _check_leaks(examples, st)
    else:
        examples, fmt = _convert(cfg, path, st)
        kept = check_examples(examples, cfg, tokenizer, st)
    _near(kept, st)
    return _report(cfg, fmt, st, kept, seed)


def _check_leaks(examples: list[Example], st: _State) -> None:
    """In a prepared folder, the same example in two splits is a leak (test data seen in training)."""
    split_of: dict[str, Example] = {}
    for ex in examples:
        other = split_of.setdefault(ex.id, ex)
        if other.extra_meta["split"] != ex.extra_meta["split"]:
            st.problem("leak", ex.file, ex.line, "(example)", f"the same example is in {other.where}")


def _read_prepared(folder: Path, st: _State) -> list[Example]:
    out = []
    for s in SPLITS:
        for n, rec in enumerate(read_examples(folder / f"{s}.jsonl"), start=1):
            st.rows += 1
            meta = rec.get("meta") or {}
            out.append(Example(rec["messages"], str(meta.get("task") or "chat"), meta.get("label"),
                               meta.get("label_set"), str(folder / f"{s}.jsonl"), n, {"split": s}))
    return out


def prepare_data(cfg: DataConfig, out_dir: Path, tokenizer: Any = None, seed: int = 42) -> PreparedData:
    """Read, convert, check, deduplicate, split and write ``train/val/test.jsonl``, ``quality.json`` and
    ``splits.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    path = resolve_input(cfg)
    st = _State()
    if is_prepared_folder(path):
        return _reuse(cfg, path, out_dir, tokenizer, seed, st)
    if cfg.stratify_by not in (None, "label"):
        raise UserError(f"data.stratify_by: only 'label' is supported (got {cfg.stratify_by!r})")
    examples, fmt = _convert(cfg, path, st)
    if cfg.max_examples is not None:  # seeded order first, so the checks stop once the sample is full
        examples, _ = sample(examples, [e.input_key for e in examples], None, seed)
    kept = check_examples(examples, cfg, tokenizer, st, limit=cfg.max_examples)
    if cfg.strict and st.problems:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "quality.json", _report(cfg, fmt, st, kept, seed))
        _fail_if_strict(cfg, st, out_dir / "quality.json")
    if not kept:
        reasons = ", ".join(f"{n} {r}" for r, n in st.dropped.most_common()) or "no rows"
        first = f"; first problem: {st.problems[0].render()}" if st.problems else ""
        raise UserError(f"{path}: no usable examples ({st.rows} rows read; dropped: {reasons}){first}")
    pairs = _near(kept, st)
    keys = group_keys(kept, pairs)
    chosen, chosen_keys = sample(kept, keys, None, seed)
    splits = assign(chosen, chosen_keys, cfg.val_fraction, cfg.test_fraction, seed, cfg.stratify_by == "label")
    report = _report(cfg, fmt, st, chosen, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.strict and st.problems:  # near duplicates are found only now
        write_json(out_dir / "quality.json", report)
        _fail_if_strict(cfg, st, out_dir / "quality.json")
    hashes = {s: write_examples(out_dir / f"{s}.jsonl", splits[s]) for s in SPLITS}
    manifest = {
        "seed": seed, "input": cfg.path, "template": cfg.template,
        "fractions": {"val": cfg.val_fraction, "test": cfg.test_fraction}, "stratify_by": cfg.stratify_by,
        "counts": {s: len(splits[s]) for s in SPLITS}, "sha256": hashes,
        "labels": {s: (label_balance(splits[s]) or {}).get("counts") for s in SPLITS},
    }
    report["splits"] = manifest["counts"]
    write_json(out_dir / "quality.json", report)
    write_json(out_dir / "splits.json", manifest)
    log.info("prepared %s -> %s: %s", cfg.path, out_dir, manifest["counts"])
    return PreparedData(out_dir / "train.jsonl", out_dir / "val.jsonl", out_dir / "test.jsonl", report, manifest)


def _reuse(cfg: DataConfig, folder: Path, out_dir: Path, tokenizer: Any, seed: int, st: _State) -> PreparedData:
    """Validate an already prepared folder and copy its splits (a prepared folder can be reused as input)."""
    examples = _read_prepared(folder, st)
    check_examples(examples, cfg, tokenizer, st, drop=False)
    _check_leaks(examples, st)
    report = _report(cfg, "prepared", st, examples, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    _fail_if_strict(cfg, st, None)
    hashes = {}
    for s in SPLITS:
        src, dst = folder / f"{s}.jsonl", out_dir / f"{s}.jsonl"
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        from tuneforge.models.cache import sha256_file

        hashes[s] = sha256_file(dst)
    counts = Counter(ex.extra_meta["split"] for ex in examples)
    manifest = {"seed": seed, "input": cfg.path, "reused": True, "counts": {s: counts.get(s, 0) for s in SPLITS},
                "sha256": hashes}
    report["splits"] = manifest["counts"]
    write_json(out_dir / "quality.json", report)
    write_json(out_dir / "splits.json", manifest)
    return PreparedData(out_dir / "train.jsonl", out_dir / "val.jsonl", out_dir / "test.jsonl", report, manifest)
