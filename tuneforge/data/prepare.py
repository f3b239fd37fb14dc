"""Raw data -> validated, templated, deduplicated, split chat JSONL with a quality report.

``prepare_data`` is the one entry point (the CLI and the quickstart call it). Every row that is
dropped or changed is counted by reason; every problem is kept with ``file:line: field: message``;
``strict`` turns any problem into a failure. Output is deterministic: the same input, recipe and seed
give byte-identical files.

The output folder is written as a unit (``tuneforge.atomic.replace_folder``): built under a temporary
name, ``splits.json`` last, then renamed into place, so a prepare killed half-way leaves the previous
folder or none, never a ``train.jsonl`` without its validation split. With ``redact_pii`` no file in it
(splits, ``quality.json``, ``splits.json``) holds what the detectors find, and a prepared folder is
reused only with the ``redact_pii`` setting it was made with.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tuneforge.atomic import replace_folder
from tuneforge.config.data import DataConfig
from tuneforge.data.checks import CheckState, check_examples, check_leaks, near_duplicates
from tuneforge.data.example import ChatExample
from tuneforge.data.formats import detect_format, to_messages
from tuneforge.data.io import MANIFEST, read_examples, require_complete, write_examples, write_json
from tuneforge.data.pii import NAMES as PII_NAMES
from tuneforge.data.pii import find_pii, redact, redact_strings
from tuneforge.data.problems import RowError
from tuneforge.data.quality import label_balance
from tuneforge.data.readers import read_rows
from tuneforge.data.sources import BUNDLED, bundled_dataset_path, bundled_template_args
from tuneforge.data.split import SPLITS, assign, group_keys, sample
from tuneforge.data.templates import Skip, get_template
from tuneforge.errors import UserError

log = logging.getLogger(__name__)
MAX_LISTED_PROBLEMS = 1000
OUTPUT_FILES = {f"{s}.jsonl" for s in SPLITS} | {"quality.json", MANIFEST}


@dataclass
class PreparedData:
    train: Path
    val: Path
    test: Path
    report: dict[str, Any]
    manifest: dict[str, Any]


def resolve_input(cfg: DataConfig) -> Path:
    """``cfg.path`` as a file or folder (bundled dataset names are looked up in their packages)."""
    if cfg.path in BUNDLED and not Path(cfg.path).exists():
        return bundled_dataset_path(cfg.path)
    return Path(cfg.path)


def is_prepared_folder(path: Path) -> bool:
    """A folder of prepared splits (complete or not: reuse checks that), not a raw data folder."""
    return path.is_dir() and any((path / name).is_file() for name in (*(f"{s}.jsonl" for s in SPLITS), MANIFEST))


def check_reusable(folder: Path, cfg: DataConfig) -> dict[str, Any] | None:
    """UserError unless ``folder`` is a complete prepared folder made with ``cfg.redact_pii``'s setting.

    A folder's manifest records whether it was redacted; a hand-made folder (no manifest) used with
    ``redact_pii`` must hold no PII, since reusing a folder copies it as it is. Returns the manifest.
    """
    manifest = require_complete(folder)
    made_with = manifest.get("redact_pii") if manifest else None
    if made_with is not None and bool(made_with) != cfg.redact_pii:
        how = "with" if made_with else "without"
        raise UserError(
            f"{folder}: data.redact_pii: the folder was prepared {how} --redact-pii, but the recipe sets "
            f"data.redact_pii={str(cfg.redact_pii).lower()}; prepare the raw data again with the setting you want, "
            f"or set data.redact_pii={str(bool(made_with)).lower()}"
        )
    if made_with is None and cfg.redact_pii:
        found = _first_pii(folder)
        if found:
            raise UserError(
                f"{found[0]}: data.redact_pii: {found[1]} in a prepared folder that was not redacted (reusing a folder "
                "copies it as it is); prepare the raw data again with --redact-pii"
            )
    return manifest


def _first_pii(folder: Path) -> tuple[str, str] | None:
    """(file:line, what) of the first PII match in a prepared folder's splits."""
    for s in SPLITS:
        path = folder / f"{s}.jsonl"
        for n, rec in enumerate(read_examples(path), start=1):
            meta = rec.get("meta") or {}
            labels = [meta.get("task"), meta.get("label"), *(meta.get("label_set") or [])]
            texts = [m["content"] for m in rec["messages"]] + [x for x in labels if isinstance(x, str)]
            for text in texts:
                kinds = sorted({k for k, _, _ in find_pii(text)})
                if kinds:
                    return f"{path}:{n}", "contains " + ", ".join(PII_NAMES[k] for k in kinds)
    return None


def _check_out_dir(out_dir: Path, input_folder: Path | None = None) -> Path:
    """The folder to replace as a whole; refused when it holds files that are not prepared output."""
    target = out_dir.resolve()
    if target.exists() and not target.is_dir():
        raise UserError(f"{out_dir}: the output path exists and is not a folder; choose a folder (--out)")
    if target.is_dir():
        other = sorted(p.name for p in target.iterdir() if p.name not in OUTPUT_FILES and not p.name.endswith(".tmp"))
        if other:
            raise UserError(
                f"{out_dir}: the output folder holds other files ({', '.join(other[:5])}); prepared data replaces "
                "the whole folder, so choose a new or empty folder (--out)"
            )
    return target


def _convert(cfg: DataConfig, path: Path, st: CheckState) -> tuple[list[ChatExample], str]:
    """Read and convert every row; returns examples and the format used."""
    template = get_template(cfg.template) if cfg.template else None
    targs = template.args({**bundled_template_args(cfg.path, cfg.template), **cfg.template_args}) if template else {}
    fmt = "raw" if template and cfg.format == "auto" else cfg.format
    if fmt == "raw" and template is None:
        raise UserError("data.template: format 'raw' needs a template (see `tuneforge data templates`)")
    examples: list[ChatExample] = []
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
                ex = ChatExample(messages, template.name, pair.label, pair.label_set, row.file, row.line)
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
                ex = ChatExample(messages, str(meta.get("task") or fmt), meta.get("label"), meta.get("label_set"),
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


def _report(cfg: DataConfig, fmt: str, st: CheckState, kept: list[ChatExample], seed: int) -> dict[str, Any]:
    st.problems.sort(key=lambda p: (p.file, p.line or 0, p.kind))  # stable: same order on every run
    kinds = Counter(p.kind for p in st.problems)
    near = st.extra.get("near_pairs", [])
    report = {
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
    # Problems quote answers and labels (before redaction happened): redact the whole report.
    return redact_strings(report) if cfg.redact_pii else report


def _fail_if_strict(cfg: DataConfig, st: CheckState, report_path: Path | None) -> None:
    if not cfg.strict or not st.problems:
        return
    st.problems.sort(key=lambda p: (p.file, p.line or 0, p.kind))
    lines = [p.render() for p in st.problems[:30]]
    if cfg.redact_pii:
        lines = [redact(line)[0] for line in lines]
    if len(st.problems) > 30:
        lines.append(f"... and {len(st.problems) - 30} more" + (f" in {report_path}" if report_path else ""))
    raise UserError(f"{len(st.problems)} data problem(s) and --strict is on (data.strict)", lines)


def validate_data(cfg: DataConfig, tokenizer: Any = None, seed: int = 42) -> dict[str, Any]:
    """The quality report for ``cfg.path`` without writing anything (what prepare would drop, and why)."""
    path = resolve_input(cfg)
    st = CheckState()
    if is_prepared_folder(path):
        require_complete(path)
        examples, fmt = _read_prepared(path, st), "prepared"
        kept = check_examples(examples, cfg, tokenizer, st, drop=False)
        check_leaks(examples, st)
    else:
        examples, fmt = _convert(cfg, path, st)
        kept = check_examples(examples, cfg, tokenizer, st)
    near_duplicates(kept, st)
    return _report(cfg, fmt, st, kept, seed)


def _read_prepared(folder: Path, st: CheckState) -> list[ChatExample]:
    out = []
    for s in SPLITS:
        for n, rec in enumerate(read_examples(folder / f"{s}.jsonl"), start=1):
            st.rows += 1
            meta = rec.get("meta") or {}
            out.append(ChatExample(rec["messages"], str(meta.get("task") or "chat"), meta.get("label"),
                               meta.get("label_set"), str(folder / f"{s}.jsonl"), n, {"split": s}))
    return out


def prepare_data(cfg: DataConfig, out_dir: Path, tokenizer: Any = None, seed: int = 42) -> PreparedData:
    """Read, convert, check, deduplicate, split and write ``train/val/test.jsonl``, ``quality.json`` and
    ``splits.json`` into ``out_dir``, which is replaced as a whole once everything is written."""
    out_dir = Path(out_dir)
    path = resolve_input(cfg)
    st = CheckState()
    if is_prepared_folder(path):
        return _reuse(cfg, path, out_dir, tokenizer, seed, st)
    if cfg.stratify_by not in (None, "label"):
        raise UserError(f"data.stratify_by: only 'label' is supported (got {cfg.stratify_by!r})")
    target = _check_out_dir(out_dir)
    examples, fmt = _convert(cfg, path, st)
    if cfg.max_examples is not None:  # seeded order first, so the checks stop once the sample is full
        examples, _ = sample(examples, [e.input_key for e in examples], None, seed)
    kept = check_examples(examples, cfg, tokenizer, st, limit=cfg.max_examples)
    if cfg.strict and st.problems:
        _fail_with_report(cfg, st, target, _report(cfg, fmt, st, kept, seed))
    if not kept:
        reasons = ", ".join(f"{n} {r}" for r, n in st.dropped.most_common()) or "no rows"
        first = f"; first problem: {st.problems[0].render()}" if st.problems else ""
        raise UserError(f"{path}: no usable examples ({st.rows} rows read; dropped: {reasons}){first}")
    pairs = near_duplicates(kept, st)
    keys = group_keys(kept, pairs)
    chosen, chosen_keys = sample(kept, keys, None, seed)
    splits = assign(chosen, chosen_keys, cfg.val_fraction, cfg.test_fraction, seed, cfg.stratify_by == "label")
    report = _report(cfg, fmt, st, chosen, seed)
    if cfg.strict and st.problems:  # near duplicates are found only now
        _fail_with_report(cfg, st, target, report)
    with replace_folder(target) as tmp:
        hashes = {s: write_examples(tmp / f"{s}.jsonl", splits[s]) for s in SPLITS}
        manifest = {
            "seed": seed, "input": cfg.path, "template": cfg.template,
            "fractions": {"val": cfg.val_fraction, "test": cfg.test_fraction}, "stratify_by": cfg.stratify_by,
            "counts": {s: len(splits[s]) for s in SPLITS}, "sha256": hashes,
            "labels": {s: (label_balance(splits[s]) or {}).get("counts") for s in SPLITS},
            "redact_pii": cfg.redact_pii,
        }
        manifest = _write_reports(cfg, tmp, report, manifest)
    log.info("prepared %s -> %s: %s", cfg.path, out_dir, manifest["counts"])
    return PreparedData(out_dir / "train.jsonl", out_dir / "val.jsonl", out_dir / "test.jsonl", report, manifest)


def _write_reports(cfg: DataConfig, folder: Path, report: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """quality.json, then splits.json: the manifest is the last file of a complete folder."""
    if cfg.redact_pii:
        manifest = redact_strings(manifest)
    report["splits"] = manifest["counts"]
    write_json(folder / "quality.json", report)
    write_json(folder / MANIFEST, manifest)
    return manifest


def _fail_with_report(cfg: DataConfig, st: CheckState, target: Path, report: dict[str, Any]) -> None:
    """--strict found problems: the output folder becomes just quality.json (no splits to reuse), then fail."""
    with replace_folder(target) as tmp:
        write_json(tmp / "quality.json", report)
    _fail_if_strict(cfg, st, target / "quality.json")


def _reuse(cfg: DataConfig, folder: Path, out_dir: Path, tokenizer: Any, seed: int, st: CheckState) -> PreparedData:
    """Validate an already prepared folder and copy its splits (a prepared folder can be reused as input)."""
    made = check_reusable(folder, cfg)
    examples = _read_prepared(folder, st)
    check_examples(examples, cfg, tokenizer, st, drop=False)
    check_leaks(examples, st)
    report = _report(cfg, "prepared", st, examples, seed)
    _fail_if_strict(cfg, st, None)
    target = _check_out_dir(out_dir)
    from tuneforge.models.cache import sha256_file

    with replace_folder(target) as tmp:  # copied first, so reusing a folder in place works too
        hashes = {}
        for s in SPLITS:
            shutil.copyfile(folder / f"{s}.jsonl", tmp / f"{s}.jsonl")
            hashes[s] = sha256_file(tmp / f"{s}.jsonl")
        counts = Counter(ex.extra_meta["split"] for ex in examples)
        manifest = {"seed": seed, "input": cfg.path, "reused": True, "counts": {s: counts.get(s, 0) for s in SPLITS},
                    "sha256": hashes, "redact_pii": bool(made.get("redact_pii")) if made else cfg.redact_pii}
        manifest = _write_reports(cfg, tmp, report, manifest)
    return PreparedData(out_dir / "train.jsonl", out_dir / "val.jsonl", out_dir / "test.jsonl", report, manifest)
