"""Templates turn raw records into instruction pairs; missing fields name template, field and record."""

from __future__ import annotations

import json

import pytest

from tuneforge.data.problems import RowError
from tuneforge.data.templates import BUILTIN, get_template
from tuneforge.errors import UserError


def _apply(name, record, **args):
    t = get_template(name)
    return t.apply(record, t.args(args))


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_builtin_template_renders_its_example(name):
    t = BUILTIN[name]
    args = {"label_set": ["spam", "ham"]} if name == "classify" else {}
    pair = t.apply(t.example, t.args(args))
    assert pair.prompt.strip() and pair.answer.strip()
    if t.classification:
        assert pair.label == pair.answer and pair.answer in pair.label_set
    else:
        assert pair.label is None


def test_sentiment_maps_rotten_tomatoes_labels_and_skips_plot():
    from tuneforge.data.templates import Skip

    pair = _apply("sentiment", {"text": "A triumph.", "category": "fresh"}, label_field="category")
    assert (pair.answer, pair.label_set) == ("positive", ["positive", "negative"])
    assert "A triumph." in pair.prompt and pair.prompt.rstrip().endswith("(positive or negative).")
    assert _apply("sentiment", {"text": "Dull.", "label": "rotten"}).answer == "negative"
    with pytest.raises(Skip):
        _apply("sentiment", {"text": "A plot.", "category": "plot"}, label_field="category", skip_labels=["plot"])


def test_star_rating_accepts_numbers_and_numeric_strings():
    assert _apply("star_rating", {"text": "Great.", "rating": "5"}).answer == "5"
    assert _apply("star_rating", {"text": "Great.", "rating": 4.0}).label_set == ["1", "2", "3", "4", "5"]
    assert _apply("star_rating", {"text": "Great.", "stars": 9}, rating_field="stars", max_rating=10).answer == "9"


def test_classify_needs_a_label_set_and_checks_labels():
    with pytest.raises(UserError, match="label_set"):
        _apply("classify", {"text": "x", "label": "spam"})
    assert _apply("classify", {"text": "x", "label": "Spam"}, label_set=["spam", "ham"]).answer == "spam"
    with pytest.raises(RowError) as err:
        _apply("classify", {"text": "x", "label": "eggs"}, label_set=["spam", "ham"])
    assert err.value.field == "label"


def test_missing_field_names_template_and_field():
    with pytest.raises(RowError) as err:
        _apply("summarize", {"text": "A long article."})
    assert err.value.field == "summary"
    assert "template 'summarize'" in err.value.message and "summary_field" in err.value.message


def test_unknown_template_argument_is_rejected():
    with pytest.raises(UserError, match="text_colum"):
        _apply("sentiment", {"text": "x", "label": "pos"}, text_colum="text")


def test_qa_accepts_squad_answers_and_ner_outputs_json():
    squad = {"context": "Ada was born in 1815.", "question": "When?", "answer": {"text": ["1815"], "answer_start": [16]}}
    assert _apply("extractive_qa", squad).answer == "1815"
    ner = _apply("ner", {"text": "Ada met Bob in Paris.", "entities": json.dumps({"PER": ["Bob", "Ada"], "LOC": ["Paris"]})})
    assert json.loads(ner.answer) == [{"text": "Ada", "type": "PER"}, {"text": "Bob", "type": "PER"},
                                      {"text": "Paris", "type": "LOC"}]
    tr = _apply("translate", {"en": "Hello", "de": "Hallo"}, source_field="en", target_field="de", target_lang="German")
    assert "to German" in tr.prompt and tr.answer == "Hallo"


def test_user_jinja_template(tmp_path):
    path = tmp_path / "ticket.yaml"
    path.write_text(
        "name: ticket_priority\n"
        "prompt: |\n  Ticket from {{ customer }}: {{ body | trim }}\n  Priority (low/high)?\n"
        "response: \"{{ 'high' if urgent else 'low' }}\"\n"
        "label_set: [low, high]\n"
    )
    t = get_template(str(path))
    assert set(t.fields) == {"customer", "body", "urgent"}
    pair = t.apply({"customer": "ACME", "body": " Site down ", "urgent": True}, t.args({}))
    assert pair.prompt.startswith("Ticket from ACME: Site down") and pair.answer == "high" and pair.label == "high"
    with pytest.raises(RowError) as err:
        t.apply({"customer": "ACME", "urgent": False}, t.args({}))
    assert err.value.field == "body" and "ticket_priority" in err.value.message


def test_user_template_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("prompt: '{{ text '\nresponse: '{{ label }}'\n")
    with pytest.raises(UserError, match="Jinja2 syntax error"):
        get_template(str(path))


def test_labels_outside_the_set_can_be_left_out_on_purpose():
    from tuneforge.data.templates import Skip

    args = {"label_set": ["Pain", "Depression"], "label_field": "condition", "text_field": "review"}
    with pytest.raises(RowError) as err:
        _apply("classify", {"review": "Helped a lot.", "condition": "Acne"}, **args)
    assert err.value.kind == "bad_label"
    with pytest.raises(Skip, match="condition not in label_set"):
        _apply("classify", {"review": "Helped a lot.", "condition": "Acne"}, skip_other_labels=True, **args)
