"""Instruction formats are detected and become the same chat conversation."""

from __future__ import annotations

import json

import pytest

from tuneforge.config.data import DataConfig
from tuneforge.data.formats import detect_format, to_messages
from tuneforge.data.io import read_examples
from tuneforge.data.prepare import prepare_data

EXPECTED = [{"role": "user", "content": "Name a colour.\n\nOne word."}, {"role": "assistant", "content": "Blue."}]
RECORDS = {
    "chat": {"messages": EXPECTED},
    "alpaca": {"instruction": "Name a colour.", "input": "One word.", "output": "Blue."},
    "sharegpt": {"conversations": [{"from": "human", "value": "Name a colour.\n\nOne word."}, {"from": "gpt", "value": "Blue."}]},
    "prompt_completion": {"prompt": "Name a colour.\n\nOne word.", "completion": "Blue."},
}


@pytest.mark.parametrize("fmt", list(RECORDS))
def test_each_format_is_detected_and_converted(fmt):
    assert detect_format(RECORDS[fmt]) == fmt
    assert to_messages(RECORDS[fmt], fmt) == EXPECTED


def test_multi_turn_chat_and_content_parts_are_kept():
    record = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]}
    msgs = to_messages(record, "chat")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[1]["content"] == "Hi"


def test_explicit_format_overrides_detection(tmp_path):
    # A record with both shapes: auto picks chat; --format alpaca uses the alpaca fields.
    both = {**RECORDS["chat"], **RECORDS["alpaca"], "output": "Red."}
    (tmp_path / "d.jsonl").write_text(json.dumps(both) + "\n")
    auto = prepare_data(DataConfig(path=str(tmp_path / "d.jsonl"), val_fraction=0, test_fraction=0), tmp_path / "a")
    forced = prepare_data(DataConfig(path=str(tmp_path / "d.jsonl"), format="alpaca", val_fraction=0, test_fraction=0),
                          tmp_path / "b")
    assert next(read_examples(auto.train))["messages"][-1]["content"] == "Blue."
    assert next(read_examples(forced.train))["messages"][-1]["content"] == "Red."
    assert auto.report["format"] == "chat" and forced.report["format"] == "alpaca"
