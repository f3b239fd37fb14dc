"""Prompt templates: turn raw records (a review, an article, a sentence pair) into instruction pairs.

Each template declares the record fields it reads as arguments with defaults (``text_field: text``), so
the same template works on any column names (``--set data.template_args.text_field=review``). A record
without a declared field is a row error naming template, field and record. User templates are YAML
files with Jinja2 ``prompt`` and ``response`` (rendered in a sandbox); their fields are the variables
the two templates use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.pii import clip
from tuneforge.data.problems import RowError
from tuneforge.errors import UserError

# Common spellings of sentiment labels in public review data (Rotten Tomatoes says fresh/rotten).
SENTIMENT_MAP = {
    "fresh": "positive", "rotten": "negative", "pos": "positive", "neg": "negative",
    "1": "positive", "0": "negative", "true": "positive", "false": "negative",
}


@dataclass
class Pair:
    """A templated example: user prompt, reference answer and, for classification, the gold label."""

    prompt: str
    answer: str
    label: str | None = None
    label_set: list[str] | None = None


class Skip(Exception):  # noqa: N818 - a signal, not an error
    """The template was told to leave this record out (e.g. ``skip_labels``); counted, not a problem."""


@dataclass
class Template:
    name: str
    description: str
    fields: dict[str, str]  # argument name -> default record field
    build: Callable[[dict[str, Any], dict[str, Any]], Pair]
    example: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)  # other arguments and their defaults
    classification: bool = False

    def args(self, given: dict[str, Any]) -> dict[str, Any]:
        known = set(self.fields) | set(self.options)
        unknown = sorted(set(given) - known)
        if unknown:
            raise UserError(
                f"data.template_args.{unknown[0]}: template {self.name!r} has no such argument; "
                f"it takes {', '.join(sorted(known))}"
            )
        return {**self.fields, **self.options, **given}

    def apply(self, record: dict[str, Any], args: dict[str, Any]) -> Pair:
        for arg in self.fields:
            column = str(args[arg])
            if column not in record:
                have = ", ".join(list(record)[:8]) or "none"
                raise RowError(
                    column,
                    f"missing: template {self.name!r} needs it ({arg}); the record has {have}"
                    f" (map another column with --set data.template_args.{arg}=NAME)",
                )
        return self.build(record, args)


def text_value(record: dict[str, Any], column: str) -> str:
    value = record[column]
    if value is None:
        raise RowError(column, "is null; expected text")
    if not isinstance(value, str):
        raise RowError(column, f"expected text, got {type(value).__name__} ({clip(str(value), 40)})")
    if not value.strip():
        raise RowError(column, "is empty", kind="empty_input")
    return value.strip()


def label_value(record: dict[str, Any], column: str) -> str:
    value = record[column]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(column, "label is empty")
    if isinstance(value, dict | list):
        raise RowError(column, f"expected a label, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _labels(args: dict[str, Any], column: str, raw: str, default_map: dict[str, str]) -> tuple[str, list[str]]:
    label_set = [str(x) for x in args["label_set"]]
    mapping = {**default_map, **{str(k).lower(): str(v) for k, v in (args.get("label_map") or {}).items()}}
    key = raw.lower()
    if key in {str(s).lower() for s in args.get("skip_labels") or []}:
        raise Skip(f"skip_labels: {column}={raw}")
    label = mapping.get(key, raw)
    match = next((s for s in label_set if s.lower() == label.lower()), None)
    if match is None and args.get("skip_other_labels"):
        raise Skip(f"{column} not in label_set")
    if match is None:
        raise RowError(
            column, f"label {raw!r} is not in label_set {label_set}; map it with data.template_args.label_map "
            "or leave it out with data.template_args.skip_labels (or skip_other_labels: true)", kind="bad_label"
        )
    return match, label_set


def _or_list(labels: list[str]) -> str:
    return ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]


def _sentiment(r: dict[str, Any], a: dict[str, Any]) -> Pair:
    label, labels = _labels(a, a["label_field"], label_value(r, a["label_field"]), SENTIMENT_MAP)
    text = text_value(r, a["text_field"])
    # The question comes after the text, and the answer format last: SmolLM2-135M-Instruct then starts its
    # reply with the label (38 of 40 Rotten Tomatoes test prompts) instead of "The sentiment of this...".
    prompt = (
        f"{a['kind'].capitalize()}: {text}\n\n"
        f"Question: Is the sentiment of this {a['kind']} {_or_list(labels)}?\n"
        f"Answer with one word ({_or_list(labels)})."
    )
    return Pair(prompt, label, label, labels)


def _star_rating(r: dict[str, Any], a: dict[str, Any]) -> Pair:
    text = text_value(r, a["text_field"])
    raw = label_value(r, a["rating_field"])
    lo, hi = int(a["min_rating"]), int(a["max_rating"])
    try:
        stars = float(raw)
    except ValueError:
        raise RowError(a["rating_field"], f"expected a number from {lo} to {hi}, got {raw!r}") from None
    if not stars.is_integer() or not lo <= stars <= hi:
        raise RowError(a["rating_field"], f"expected a whole number from {lo} to {hi}, got {raw}")
    labels = [str(i) for i in range(lo, hi + 1)]
    prompt = (
        f"Review: {text}\n\n"
        f"Question: How many stars ({lo} to {hi}) did the author of this review give?\n"
        f"Answer with one number ({lo} to {hi})."
    )
    return Pair(prompt, str(int(stars)), str(int(stars)), labels)


def _classify(r: dict[str, Any], a: dict[str, Any]) -> Pair:
    if not a.get("label_set"):
        raise UserError("data.template_args.label_set: template 'classify' needs the list of labels")
    label, labels = _labels(a, a["label_field"], label_value(r, a["label_field"]), {})
    text = text_value(r, a["text_field"])
    instruction = a.get("instruction") or "Which label fits this text?"
    prompt = f"Text: {text}\n\nQuestion: {instruction}\nAnswer with one label ({_or_list(labels)})."
    return Pair(prompt, label, label, labels)


def _summarize(r: dict[str, Any], a: dict[str, Any]) -> Pair:
    text, summary = text_value(r, a["text_field"]), text_value(r, a["summary_field"])
    return Pair(f"Summarize the following text in a few sentences.\n\n{text}", summary)


def _translate(r: dict[str, Any], a: dict[str, Any]) -> Pair:
    src, tgt = text_value(r, a["source_field"]), text_value(r, a["target_field"])
    return Pair(f"Translate from {a['source_lang']} to {a['target_lang']}.\n\n{src}", tgt)


def _qa(r: dict[str, Any], a: dict[str, Any]) -> Pair:
    context, question = text_value(r, a["context_field"]), text_value(r, a["question_field"])
    raw = r[a["answer_field"]]
    if isinstance(raw, dict) and isinstance(raw.get("text"), list):  # SQuAD: {"text": [...], "answer_start": [...]}
        raw = raw["text"][0] if raw["text"] else ""
    answer = text_value({a["answer_field"]: raw}, a["answer_field"])
    if answer not in context:
        raise RowError(a["answer_field"], f"answer {clip(answer, 40)!r} is not a span of the context (extractive QA)")
    prompt = (
        "Answer the question with a short span copied from the context.\n\n"
        f"Context: {context}\n\nQuestion: {question}"
    )
    return Pair(prompt, answer)


def _entities(value: Any, column: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError(column, "expected a JSON list of {text, type} entities") from None
    if isinstance(value, dict):  # {"PER": ["Ada"], "ORG": [...]}
        value = [{"text": t, "type": k} for k, items in value.items() for t in (items or [])]
    if not isinstance(value, list):
        raise RowError(column, f"expected a list of entities, got {type(value).__name__}")
    out = []
    for i, e in enumerate(value):
        if not (isinstance(e, dict) and isinstance(e.get("text"), str) and isinstance(e.get("type", e.get("label")), str)):
            raise RowError(f"{column}[{i}]", "expected an object with text and type strings")
        out.append({"text": e["text"], "type": e.get("type", e.get("label"))})
    return out


def _ner(r: dict[str, Any], a: dict[str, Any]) -> Pair:
    text = text_value(r, a["text_field"])
    entities = _entities(r[a["entities_field"]], a["entities_field"])
    for e in entities:
        if e["text"] not in text:
            raise RowError(a["entities_field"], f"entity {e['text']!r} does not occur in the text")
    entities.sort(key=lambda e: text.find(e["text"]))
    types = a.get("entity_types") or sorted({e["type"] for e in entities}) or ["PER", "ORG", "LOC"]
    prompt = (
        f"List the named entities in the text as a JSON array of objects with \"text\" and \"type\" "
        f"(types: {', '.join(types)}). Answer [] if there are none.\n\nText: {text}"
    )
    return Pair(prompt, json.dumps(entities, ensure_ascii=False))


BUILTIN: dict[str, Template] = {
    t.name: t
    for t in [
        Template("sentiment", "review -> positive/negative (fresh/rotten, pos/neg, 1/0 are mapped)",
                 {"text_field": "text", "label_field": "label"}, _sentiment,
                 {"text": "A gorgeous, witty, seductive movie.", "label": "fresh"},
                 {"label_set": ["positive", "negative"], "label_map": {}, "skip_labels": [], "skip_other_labels": False,
                  "kind": "review"}, True),
        Template("star_rating", "review -> star rating (1-5 by default)", {"text_field": "text", "rating_field": "rating"},
                 _star_rating, {"text": "Works, but the battery dies by noon.", "rating": 3},
                 {"min_rating": 1, "max_rating": 5}, True),
        Template("classify", "text -> one label of a given label set", {"text_field": "text", "label_field": "label"},
                 _classify, {"text": "Win a free cruise now!!!", "label": "spam"},
                 {"label_set": [], "label_map": {}, "skip_labels": [], "skip_other_labels": False, "instruction": ""}, True),
        Template("summarize", "document -> summary", {"text_field": "text", "summary_field": "summary"}, _summarize,
                 {"text": "The council voted 7-2 on Monday to extend the tram line to the airport by 2029.",
                  "summary": "The tram line will reach the airport by 2029."}),
        Template("translate", "sentence -> translation", {"source_field": "source", "target_field": "target"},
                 _translate, {"source": "Good morning", "target": "Bonjour"},
                 {"source_lang": "English", "target_lang": "French"}),
        Template("extractive_qa", "context + question -> answer span (SQuAD-style answers accepted)",
                 {"context_field": "context", "question_field": "question", "answer_field": "answer"}, _qa,
                 {"context": "Marie Curie won the Nobel Prize in Physics in 1903.",
                  "question": "When did Marie Curie win the physics prize?", "answer": "1903"}),
        Template("ner", "text -> JSON list of named entities", {"text_field": "text", "entities_field": "entities"},
                 _ner, {"text": "Ada Lovelace worked with Charles Babbage in London.",
                        "entities": [{"text": "Ada Lovelace", "type": "PER"}, {"text": "London", "type": "LOC"},
                                     {"text": "Charles Babbage", "type": "PER"}]},
                 {"entity_types": []}),
    ]
}


def load_user_template(path: Path) -> Template:
    """A YAML file with Jinja2 ``prompt`` and ``response`` (and optional ``name``, ``description``,
    ``label`` and ``label_set`` for classification)."""
    import jinja2
    from jinja2 import meta
    from jinja2.sandbox import SandboxedEnvironment

    from tuneforge.config.loader import _yaml_lines, read_yaml

    spec, text = read_yaml(path, "template")
    if not isinstance(spec, dict) or not isinstance(spec.get("prompt"), str) or not isinstance(spec.get("response"), str):
        raise UserError(f"{path}: a user template needs string keys 'prompt' and 'response' (Jinja2)")
    for key, kind, ok in (("label_set", "a list of labels", list), ("example", "a mapping of field: value", dict)):
        if spec.get(key) is not None and not isinstance(spec[key], ok):
            line = _yaml_lines(text).get((key,))
            raise UserError(f"{path}:{line}: {key}: expected {kind}, got {type(spec[key]).__name__}")
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    parts = {k: spec[k] for k in ("prompt", "response", "label") if isinstance(spec.get(k), str)}
    try:
        compiled = {k: env.from_string(v) for k, v in parts.items()}
        variables = set().union(*(meta.find_undeclared_variables(env.parse(v)) for v in parts.values()))
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{path}:{exc.lineno}: Jinja2 syntax error: {exc.message}") from None
    label_set = [str(x) for x in spec.get("label_set") or []] or None
    name = str(spec.get("name") or path.stem)

    def build(r: dict[str, Any], a: dict[str, Any]) -> Pair:
        try:
            out = {k: t.render(**r).strip() for k, t in compiled.items()}
        except jinja2.UndefinedError as exc:
            raise RowError("(template)", f"template {name!r}: {exc.message}") from None
        except Exception as exc:  # a bad filter or a type error inside the user's template
            raise RowError("(template)", f"template {name!r} failed: {exc}") from None
        label = out.get("label") if "label" in out else (out["response"] if label_set else None)
        if label_set and label not in label_set:
            raise RowError("(template)", f"label {label!r} is not in label_set {label_set}")
        return Pair(out["prompt"], out["response"], label, label_set)

    fields = {v: v for v in sorted(variables)}
    return Template(name, str(spec.get("description") or f"user template {path.name}"), fields, build,
                    dict(spec.get("example") or {}), {}, bool(label_set))


def get_template(name: str) -> Template:
    if name in BUILTIN:
        return BUILTIN[name]
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return load_user_template(p)
    raise UserError(
        f"data.template: unknown template {name!r}; built-in: {', '.join(BUILTIN)} (or a .yaml user template file)"
    )
