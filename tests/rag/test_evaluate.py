from __future__ import annotations

import json

import pytest

from tuneforge.errors import UserError
from tuneforge.rag.documents import load_documents
from tuneforge.rag.evaluate import (
    contains_answer,
    evaluate_retrieval,
    load_qa,
    relevant_chunks,
    span_pattern,
    token_f1,
)
from tuneforge.rag.index import index_documents
from tuneforge.rag.store import open_store


def test_bundled_qa_gold_passages_are_in_the_installed_documents():
    pairs, path = load_qa("pydoc-topics")
    assert len(pairs) >= 25 and path.endswith(".jsonl")
    docs = {d.doc_id: d.text for d in load_documents(["pydoc-topics"])}
    for qa in pairs:
        assert qa.doc_ids[0] in docs, qa.qid
        assert span_pattern(qa.gold).search(docs[qa.doc_ids[0]]), f"{qa.qid}: gold span not in {qa.doc_ids[0]}"


def test_answer_scoring():
    assert contains_answer("It raises a NameError exception.", "NameError") == 1.0
    assert contains_answer("It raises KeyError", "NameError") == 0.0
    assert token_f1("the last one given", "the last one given") == 1.0
    assert 0 < token_f1("the last value", "the last one given") < 1


def test_qa_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "qa.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a", "gold": "g"}) + "\n")
    with pytest.raises(UserError, match="qa.jsonl:1: doc_id: "):
        load_qa(str(bad))


def test_retrieval_ranks_against_gold_chunks(rag_config, embedder):
    pairs, _ = load_qa("pydoc-topics")
    chosen = [qa for qa in pairs if qa.doc_ids[0] in {"pydoc-topics/del", "pydoc-topics/pass", "pydoc-topics/return"}]
    store = open_store(rag_config, embedder.name, embedder.dim, create=True)
    docs = load_documents(["pydoc-topics/del", "pydoc-topics/pass", "pydoc-topics/return", "pydoc-topics/lambda"])
    index_documents(store, embedder, docs, 64, 16, progress=False)
    for qa in chosen:
        relevant = relevant_chunks(store, qa)
        assert relevant, qa.qid
        assert all(c.startswith(qa.doc_ids[0] + "#") for c in relevant)
        assert any(span_pattern(qa.gold.split()[0]).search(c.text) for c in store.chunks_of(qa.doc_ids[0])
                   if c.chunk_id in relevant)
    result = evaluate_retrieval(store, embedder, chosen, k=3)
    assert len(result.ranks) == len(chosen) and not result.missing_gold
    recall10 = sum(result.recall_at(10)) / len(chosen)
    assert all(r is None or 1 <= r <= 10 for r in result.ranks)
    assert sum(result.recall_at(1)) <= sum(result.recall_at(3)) <= sum(result.recall_at(10))
    assert recall10 > 0  # a real embedder finds gold passages among 4 documents
    # A question whose gold document is not indexed is reported, never counted as found.
    missing = [qa for qa in pairs if qa.doc_ids[0] == "pydoc-topics/power"][:1]
    result = evaluate_retrieval(store, embedder, missing, k=3)
    assert result.missing_gold == [missing[0].qid] and result.ranks == [None]


GOOD_QA = {"question": "What does pass do?", "answer": "nothing", "gold": "pass is a null operation",
           "doc_id": "pydoc-topics/pass"}


@pytest.mark.parametrize(("row", "field"), [
    (["a list"], "(record): expected a JSON object"),
    ({**GOOD_QA, "answer": 5}, "answer: "),
    ({k: v for k, v in GOOD_QA.items() if k != "doc_id"}, "doc_id: "),
    ({**GOOD_QA, "doc_id": ["pydoc-topics/pass"]}, "doc_id: "),
    ({**GOOD_QA, "doc_ids": "pydoc-topics/pass"}, "doc_ids: "),
    ({**GOOD_QA, "doc_ids": [1, 2]}, "doc_ids: "),
])
def test_malformed_qa_line_is_a_one_line_error_from_the_cli(run_dir, capsys, row, field):
    from tuneforge.cli.main import main

    qa = run_dir / "qa.jsonl"
    qa.write_text(json.dumps(GOOD_QA) + "\n" + json.dumps(row) + "\n")
    assert main(["rag", "eval", "--qa", str(qa), "--retrieval-only", "--index-dir", "idx", "--name", "e"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {qa}:2: {field}") and err.count("\n") == 1, err
    assert not (run_dir / "runs").exists()  # checked before a run folder is made


def test_non_utf8_qa_file_is_a_one_line_error(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_bytes(json.dumps(GOOD_QA).encode() + b'\n{"question": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"qa.jsonl:2: \(line\): not UTF-8"):
        load_qa(str(qa))
