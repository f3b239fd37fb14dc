"""A corpus of malformed inputs, generated at test time (small synthetic fixtures, no real-world claims).

Each case: a file name, its bytes, the data config it is read with, and the ``line`` and ``field`` the
one error line must name (``line=None`` for files with no line structure, e.g. a corrupt Parquet file).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Case:
    name: str
    filename: str
    content: bytes
    line: int | None
    field: str
    cfg: dict[str, Any] = field(default_factory=dict)


def _chat(user: str = "Is this film good?", answer: Any = "positive") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _jsonl(*records: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


GOOD = _chat("A first, valid question?", "A valid, informative answer.")
GOOD2 = _chat("A second, valid question?", "Another informative answer here.")
SENT = {"template": "sentiment"}
CSV_HEAD = 'text,label\n"A moving, well acted drama.",positive\n'
RAW = {"text": "Sharp writing and a great cast.", "label": "positive"}


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def cases() -> list[Case]:
    sharegpt_ok = {"conversations": [{"from": "human", "value": "Hi there, a question?"}, {"from": "gpt", "value": "A useful answer."}]}
    alpaca_ok = {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."}
    out = [
        # JSONL, chat format (auto-detected from the first record)
        Case("bad encoding", "enc.jsonl", _jsonl(GOOD) + b'{"messages": "caf\xe9"}\n', 2, "(line)"),
        Case("truncated JSON", "trunc.jsonl", _jsonl(GOOD, '{"messages": [{"role": "user", "con'), 2, "(record)"),
        Case("array instead of object", "array.jsonl", _jsonl(GOOD, "[1, 2]"), 2, "(record)"),
        Case("mixed formats", "mixed.jsonl", _jsonl(GOOD, alpaca_ok), 2, "messages"),
        Case("messages is a string", "msgstr.jsonl", _jsonl(GOOD, {"messages": "hello"}), 2, "messages"),
        Case("message is not an object", "msgitem.jsonl", _jsonl(GOOD, {"messages": ["hello"]}), 2, "messages[0]"),
        Case("missing role", "norole.jsonl", _jsonl(GOOD, {"messages": [{"content": "hi"}]}), 2, "messages[0].role"),
        Case("unknown role", "badrole.jsonl",
             _jsonl(GOOD, {"messages": [{"role": "user", "content": "hi?"}, {"role": "bot", "content": "x"}]}), 2,
             "messages[1].role"),
        Case("content is a number", "numcontent.jsonl", _jsonl(GOOD, _chat(answer=42)), 2, "messages[1].content"),
        Case("content is null", "nullcontent.jsonl", _jsonl(GOOD, GOOD2, _chat(answer=None)), 3, "messages[1].content"),
        Case("ends with the user", "enduser.jsonl", _jsonl(GOOD, {"messages": [{"role": "user", "content": "hi?"}]}), 2,
             "messages"),
        Case("empty answer", "emptyans.jsonl", _jsonl(GOOD, _chat(answer="")), 2, "messages[-1].content"),
        Case("whitespace answer", "wsans.jsonl", _jsonl(GOOD, _chat(answer="  \n\t ")), 2, "messages[-1].content"),
        Case("lone surrogate escape", "surrogate.jsonl", _jsonl(GOOD, '{"messages": [{"role": "user", "content": "Hi \\ud800?"}, '
             '{"role": "assistant", "content": "A fine answer."}]}', GOOD2), 2, "messages[0].content"),
        Case("lone low surrogate in a key", "surkey.jsonl", _jsonl(GOOD, '{"messages": [], "x\\udc00": 1}'), 2, "(record)"),
        Case("huge line", "huge.jsonl", _jsonl(GOOD, _chat("x" * 5000), GOOD2), 2, "(line)", {"max_line_bytes": 1024}),
        Case("empty file", "empty.jsonl", b"", 1, "(file)"),
        Case("only blank lines", "blank.jsonl", b"\n  \n\n", 1, "(file)"),
        Case("no recognisable format", "raw.jsonl", _jsonl({"foo": 1, "bar": 2}), 1, "(record)"),
        # other instruction formats
        Case("sharegpt unknown speaker", "sg.jsonl",
             _jsonl(sharegpt_ok, {"conversations": [{"from": "human", "value": "hi?"}, {"from": "robot", "value": "x"}]}),
             2, "conversations[1].from"),
        Case("sharegpt missing value", "sgval.jsonl",
             _jsonl(sharegpt_ok, {"conversations": [{"from": "human", "value": "hi?"}, {"from": "gpt"}]}), 2,
             "conversations[1].value"),
        Case("alpaca output is a list", "alp.jsonl", _jsonl(alpaca_ok, {"instruction": "x", "output": ["a"]}), 2, "output"),
        Case("alpaca missing instruction", "alpins.jsonl", _jsonl(alpaca_ok, {"input": "x", "output": "y"}), 2, "instruction"),
        Case("completion is null", "pc.jsonl",
             _jsonl({"prompt": "2+2?", "completion": "It is 4."}, {"prompt": "3+3?", "completion": None}), 2, "completion"),
        # CSV with a template
        Case("CSV missing template column", "nocol.csv", b"review,label\nGood film.,positive\n", 2, "text", SENT),
        Case("CSV wrong column count", "cols.csv", (CSV_HEAD + "Too,many,columns\n").encode(), 3, "(row)", SENT),
        Case("CSV bad encoding", "enc.csv", CSV_HEAD.encode() + b"Caf\xe9 scene,positive\n", 3, "(line)", SENT),
        Case("CSV empty text", "emptytext.csv", (CSV_HEAD + ",negative\n").encode(), 3, "text", SENT),
        Case("CSV label outside label set", "label.csv", (CSV_HEAD + "Meh.,maybe\n").encode(), 3, "label", SENT),
        Case("CSV header only", "header.csv", b"text,label\n", 2, "(file)", SENT),
        Case("CSV empty file", "empty.csv", b"", 1, "(file)", SENT),
        Case("CSV duplicate column", "dupcol.csv", b"text,text\na,b\n", 1, "text", SENT),
        Case("CSV quoted field over the limit", "bigfield.csv", _csv([["text", "label"], ["Fine film.", "positive"],
                                                                     ["\n".join(["y" * 600] * 3), "negative"]]),
             3, "text", {**SENT, "max_line_bytes": 1024}),
        Case("TSV huge field", "huge.tsv", ("text\tlabel\nFine film.\tpositive\n" + "y" * 3000 + "\tpositive\n").encode(), 3,
             "(line)", {**SENT, "max_line_bytes": 1024}),
        # JSON arrays
        Case("JSON truncated", "trunc.json", b'[\n{"text": "Great.", "label": "positive"},\n{"text": "Bad', 3, "(record)", SENT),
        Case("JSON object not array", "obj.json", b'{"data": []}', 1, "(file)", SENT),
        Case("JSON number in array", "num.json", json.dumps([RAW, 7], indent=1).encode(), 6, "(record)", SENT),
        Case("JSON empty array", "emptyarr.json", b"[]", 1, "(file)", SENT),
        Case("JSON trailing comma in object", "comma.json", b'[\n{"text": "Good.", "label": "positive",}\n]', 2,
             "(record)", SENT),
        Case("JSON lone surrogate", "sur.json", b'[\n{"text": "Good.", "label": "positive"},\n{"text": "Bad \\uDBFF.", '
             b'"label": "negative"}\n]', 3, "text", SENT),
        Case("JSON bad encoding", "enc.json", b'[\n{"text": "caf\xe9", "label": "positive"}\n]', 2, "(record)", SENT),
        # wrong types and values for templates
        Case("rating is a word", "stars.jsonl", _jsonl({"text": "Nice.", "rating": 4}, {"text": "Ok.", "rating": "five"}), 2,
             "rating", {"template": "star_rating"}),
        Case("rating out of range", "stars7.jsonl", _jsonl({"text": "Nice.", "rating": 4}, {"text": "Wow.", "rating": 7}), 2,
             "rating", {"template": "star_rating"}),
        Case("text is a list", "textlist.jsonl", _jsonl(RAW, {"text": ["a"], "label": "positive"}), 2, "text", SENT),
        Case("text is null", "textnull.jsonl", _jsonl(RAW, {"text": None, "label": "negative"}), 2, "text", SENT),
        Case("label is an object", "labelobj.jsonl", _jsonl(RAW, {"text": "Fine.", "label": {"v": 1}}), 2, "label", SENT),
        Case("label column missing later", "labelmiss.jsonl", _jsonl(RAW, {"text": "Fine."}), 2, "label", SENT),
        Case("QA answer not in context", "qa.jsonl",
             _jsonl({"context": "Paris is in France.", "question": "Where is Paris?", "answer": "France"},
                    {"context": "Rome is in Italy.", "question": "Where is Rome?", "answer": "Spain"}), 2, "answer",
             {"template": "extractive_qa"}),
        Case("NER entities not a list", "ner.jsonl",
             _jsonl({"text": "Ada met Bob.", "entities": [{"text": "Ada", "type": "PER"}]},
                    {"text": "Cy met Di.", "entities": 5}), 2, "entities", {"template": "ner"}),
        # binary formats
        Case("Parquet null text", "null.parquet", _parquet([RAW, {"text": None, "label": "negative"}]), 2, "text", SENT),
        Case("Parquet corrupt", "bad.parquet", b"PAR1 this is not parquet", None, "(file)", SENT),
        Case("gzip truncated", "cut.jsonl.gz", gzip.compress(_jsonl(GOOD, GOOD2) * 50)[:60], 1, "(file)"),
        Case("bzip2 truncated", "cut.jsonl.bz2", bz2.compress(_jsonl(GOOD, GOOD2) * 50)[:60], 1, "(file)"),
        Case("xz truncated", "cut.jsonl.xz", lzma.compress(_jsonl(GOOD, GOOD2) * 50)[:60], 1, "(file)"),
        Case("xz corrupt", "bad.csv.xz", b"\xfd7zXZ\x00 not really xz", 1, "(file)", SENT),
    ]
    return out
