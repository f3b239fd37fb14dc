"""Quality checks: PII, low-information answers, duplicates, conflicts and token lengths are found and
counted; nothing is dropped without a reason."""

from __future__ import annotations

import json

import pytest

from tuneforge.config.data import DataConfig
from tuneforge.data.chat import tokenize_conversation
from tuneforge.data.io import read_examples
from tuneforge.data.pii import find_pii, redact
from tuneforge.data.prepare import prepare_data, validate_data
from tuneforge.errors import UserError


def _chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _all(prepared):
    return [e for p in (prepared.train, prepared.val, prepared.test) for e in read_examples(p)]


def test_pii_kinds_are_found_and_lookalikes_are_not():
    text = ("Mail ada@example.org or call +44 20 7946 0958. Card 4111-1111-1111-1111, "
            "IBAN GB82 WEST 1234 5698 7654 32.")
    assert [k for k, _, _ in find_pii(text)] == ["email", "phone", "card", "iban"]
    redacted, kinds = redact(text)
    assert redacted == "Mail [EMAIL] or call [PHONE]. Card [CARD], IBAN [IBAN]."
    harmless = "Took 16-24mg on 2012-12-24; pain went from 10 to 6. Order 4111 1111 1111 1112 failed Luhn."
    assert find_pii(harmless) == []


def test_redaction_changes_rows_and_counts_them(tmp_path):
    path = _write(tmp_path / "d.jsonl", [_chat("My mail is bob@corp.example, help?", "I will reply to bob@corp.example today."),
                                         _chat("Plain question here?", "A plain, useful answer.")])
    cfg = DataConfig(path=str(path), val_fraction=0, test_fraction=0)
    plain = prepare_data(cfg, tmp_path / "plain")
    assert plain.report["pii"]["counts"] == {"email": 2} and plain.report["problem_kinds"] == {"pii": 2}
    with pytest.raises(UserError, match="strict"):
        prepare_data(cfg.model_copy(update={"strict": True}), tmp_path / "strict")
    red = prepare_data(cfg.model_copy(update={"redact_pii": True, "strict": True}), tmp_path / "red")
    assert red.report["changed"] == {"PII redacted (email)": 2}
    texts = json.dumps(_all(red))
    assert "bob@corp.example" not in texts and texts.count("[EMAIL]") == 2


def test_low_information_duplicates_and_conflicts(tmp_path):
    records = [
        _chat("Can you fix the build?", "ok, I'll do it in the morning"),
        _chat("Thanks for the review", "thanks!"),
        _chat("What does HTTP 404 mean?", "The server could not find the requested resource."),
        _chat("What does HTTP 404 mean?", "The server could not find the requested resource."),
        _chat("What does HTTP 404 mean?", "Not found, the page does not exist on the server."),
        _chat("Explain the GIL in Python in one sentence please",
              "A lock that lets only one thread run Python bytecode at a time."),
        _chat("Explain the GIL in Python in one sentence, please!",
              "A lock that lets only one thread run Python bytecode at a time."),
    ]
    cfg = DataConfig(path=str(_write(tmp_path / "d.jsonl", records)), val_fraction=0, test_fraction=0)
    rep = prepare_data(cfg, tmp_path / "o").report
    assert rep["dropped"] == {"low-information answer": 2, "exact duplicate": 1}
    assert rep["counts"] == {"rows": 7, "kept": 4}
    assert rep["duplicates"] == {"exact": 1, "near_pairs": 1, "conflicting": 1}
    assert any(":4: (example): exact duplicate of " in p and p.endswith(":3") for p in rep["problems"])
    kept = prepare_data(cfg.model_copy(update={"drop_low_information": False, "dedupe": False}), tmp_path / "k")
    assert kept.report["counts"]["kept"] == 7 and kept.report["problem_kinds"]["low_information"] == 2


def test_token_lengths_use_the_chat_template_and_drop_long_examples(tmp_path, tokenizer):
    records = [_chat("Short question?", "Short answer."), _chat("word " * 200, "A long one.")]
    cfg = DataConfig(path=str(_write(tmp_path / "d.jsonl", records)), max_length=64, val_fraction=0, test_fraction=0)
    rep = validate_data(cfg, tokenizer)
    short = len(tokenize_conversation(tokenizer, records[0]["messages"])["input_ids"])
    assert rep["token_lengths"]["tokenizer"] != "estimated" and rep["token_lengths"]["min"] == short
    assert rep["token_lengths"]["over_max_length"] == 1 and rep["dropped"] == {"longer than max_length": 1}
    assert rep["problems"][0].startswith(f"{tmp_path / 'd.jsonl'}:2: (example): ")
    assert sum(b["count"] for b in rep["token_lengths"]["bins"]) == 2 == sum(rep["token_lengths"]["counts"])
    assert len(rep["token_lengths"]["edges"]) == len(rep["token_lengths"]["counts"]) + 1


RAW_PII = ["ada@example.org", "bob@corp.example", "7946 0958", "4111-1111", "Ab3dEf6hIj9kLm2nOp5q", "203.0.113.42"]
KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"


def test_redact_pii_leaves_no_raw_pii_in_any_output_file(tmp_path, capsys):
    from tuneforge.cli.main import main

    records = [
        # conflicting answers: the report quotes both answers
        _chat("Who handles billing?", "Mail ada@example.org about it."),
        _chat("Who handles billing?", "Card 4111-1111-1111-1111 is charged by bob@corp.example."),
        # a low-information answer: the report quotes it
        _chat("Can you ring the client?", "ok, will call +44 20 7946 0958 tomorrow"),
        # a secret in the prompt, an address in a label (label balance is in quality.json and splits.json)
        {**_chat(f"Is {KEY} still valid?", "No, it was revoked last week."), "meta": {"label": "203.0.113.42"}},
        _chat("Plain question here?", "A plain, useful answer."),
    ]
    path = _write(tmp_path / "d.jsonl", records)
    args = ["data", "prepare", "--input", str(path), "--redact-pii", "--no-tokenizer", "--keep-low-information"]
    assert main([*args, "--out", str(tmp_path / "lenient")]) == 0
    assert main([*args, "--out", str(tmp_path / "strict"), "--strict"]) == 2  # the conflict fails --strict
    printed = capsys.readouterr()
    assert (tmp_path / "strict" / "quality.json").is_file()
    files = [p for d in ("lenient", "strict") for p in sorted((tmp_path / d).iterdir())]
    assert {p.name for p in files} >= {"train.jsonl", "quality.json", "splits.json"}
    for p in files:
        text = p.read_text(encoding="utf-8")
        assert not [raw for raw in RAW_PII if raw in text], (p.name, text)
    assert not [raw for raw in RAW_PII if raw in printed.out + printed.err]
    report = json.loads((tmp_path / "lenient" / "quality.json").read_text())
    assert report["pii"]["redacted"] and report["problem_kinds"]["conflicting"] == 1
    assert any("[EMAIL]" in p for p in report["problems"]) and "[IP]" in report["labels"]["counts"]


def test_a_quoted_value_cut_inside_pii_is_still_redacted(tmp_path):
    # Problems quote at most 40 characters; a cut through a card number must not leave 12 of its digits.
    rows = [{"context": "Paris is in France.", "question": "Where is Paris?", "answer": "France"},
            {"context": "Rome is in Italy.", "question": "How to pay?",
             "answer": "Please pay the invoice now with 4111 1111 1111 1111"}]
    path = _write(tmp_path / "qa.jsonl", rows)
    prepared = prepare_data(DataConfig(path=str(path), template="extractive_qa", redact_pii=True), tmp_path / "o")
    assert any("[CARD]" in p for p in prepared.report["problems"]), prepared.report["problems"]
    assert "4111" not in (tmp_path / "o" / "quality.json").read_text()
