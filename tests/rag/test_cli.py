"""The whole RAG lifecycle from the command line: index, ask, update, delete, re-ask, evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tuneforge.cli.main import main

from .conftest import topic

QUESTION = "What happens when a pass statement is executed?"


def _listing(capsys) -> str:
    capsys.readouterr()
    assert main(["rag", "list", "--index-dir", "idx"]) == 0
    return capsys.readouterr().out


@pytest.fixture()
def docs(run_dir):
    folder = run_dir / "docs"
    folder.mkdir()
    for name in ("pass", "del", "return", "lambda"):
        (folder / f"{name}.md").write_text(topic(name))
    return folder


def test_index_ask_update_delete_reask(docs, tiny_model_dir, capsys):
    idx = ["--index-dir", "idx", "--chunk-tokens", "64", "--chunk-overlap", "16"]
    assert main(["rag", "index", "docs", *idx]) == 0
    assert "4 added" in capsys.readouterr().out
    assert main(["rag", "index", "docs", *idx]) == 0
    assert "4 unchanged" in capsys.readouterr().out

    assert main(["rag", "ask", QUESTION, "--index-dir", "idx", "--retrieval-only", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[1] == "docs/pass.md"

    assert main(["rag", "ask", QUESTION, "--index-dir", "idx", "--model", str(tiny_model_dir),
                 "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert "sources:" in out and "[1] docs/pass.md" in out

    (docs / "pass.md").write_text("The pass statement is a placeholder that does nothing.")  # update
    assert main(["rag", "index", "docs", *idx]) == 0
    assert "1 updated" in capsys.readouterr().out

    (docs / "lambda.md").unlink()  # a file gone from the folder leaves the index only with --prune
    assert main(["rag", "index", "docs", *idx]) == 0
    assert "docs/lambda.md" in _listing(capsys)
    assert main(["rag", "index", "docs", "--prune", *idx]) == 0
    assert "1 removed" in capsys.readouterr().out
    assert "docs/lambda.md" not in _listing(capsys)

    assert main(["rag", "delete", "docs/pass.md", "--index-dir", "idx"]) == 0
    assert "deleted docs/pass.md" in capsys.readouterr().out
    assert main(["rag", "delete", "docs/pass.md", "--index-dir", "idx"]) == 2  # already gone: a clear error

    # A new process sees the same index: the deleted document is never retrieved.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli.main", "rag", "ask", QUESTION, "--index-dir", "idx",
         "--retrieval-only", "--top-k", "50"], capture_output=True, text=True, env=env, check=True,
    )
    assert "docs/pass.md" not in proc.stdout and "docs/del.md" in proc.stdout
    assert main(["rag", "list", "--index-dir", "idx"]) == 0
    assert "docs/pass.md" not in capsys.readouterr().out


def test_eval_writes_base_and_tuned_rows_for_compare(run_dir, tiny_model_dir, tiny_model, capsys):
    from peft import LoraConfig, get_peft_model

    from tuneforge.eval.results import read_results
    from tuneforge.rag.evaluate import load_qa

    adapter = run_dir / "adapter"
    get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    pairs, _ = load_qa("pydoc-topics")
    keep = {"pydoc-topics/pass", "pydoc-topics/del"}
    qa = run_dir / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": p.qid, "question": p.question, "answer": p.answer,
                                      "doc_id": p.doc_ids[0], "gold": p.gold}) + "\n"
                          for p in pairs if p.doc_ids[0] in keep))
    assert main(["rag", "index", "pydoc-topics/pass", "pydoc-topics/del", "pydoc-topics/lambda",
                 "--index-dir", "idx", "--chunk-tokens", "64"]) == 0
    code = main(["rag", "eval", "--index-dir", "idx", "--qa", str(qa), "--model", str(tiny_model_dir),
                 "--adapter", str(adapter), "--max-new-tokens", "4", "--top-k", "2", "--name", "rag-eval"])
    assert code == 0
    out = capsys.readouterr().out
    assert "base + RAG:" in out and "tuned + RAG:" in out
    rows = {r.system: r for r in read_results(run_dir / "runs" / "rag-eval")}
    assert set(rows) == {"base + RAG", "tuned + RAG", "base zero-shot", "tuned"}
    for name in ("base + RAG", "tuned + RAG"):
        row = rows[name]
        assert {"recall@1", "recall@2", "recall@10", "mrr", "answer_accuracy", "token_f1"} <= set(row.metrics)
        assert row.metrics["mrr"].n == 2 and 0.0 <= row.metrics["recall@10"].value <= 1.0
    for name in ("base zero-shot", "tuned"):  # closed-book: answers only, and much shorter prompts
        assert set(rows[name].metrics) == {"answer_accuracy", "token_f1"}
        assert rows[name].prompt_tokens_per_request < rows["base + RAG"].prompt_tokens_per_request
    preds = (run_dir / "runs" / "rag-eval" / "eval" / "rag_predictions.jsonl").read_text().splitlines()
    assert len(preds) == 8

    # Retrieval-only evaluation needs no model at all.
    assert main(["rag", "eval", "--index-dir", "idx", "--qa", str(qa), "--retrieval-only", "--name", "retr"]) == 0
    rows = read_results(run_dir / "runs" / "retr")
    assert [r.system for r in rows] == ["retrieval"] and "mrr" in rows[0].metrics


def test_emptying_the_index_needs_all(docs, capsys):
    idx = ["--index-dir", "idx", "--chunk-tokens", "64", "--chunk-overlap", "16"]
    assert main(["rag", "index", "docs", *idx]) == 0
    capsys.readouterr()
    for targets in (["*"], ["docs"], ["docs/*"]):
        assert main(["rag", "delete", *targets, "--index-dir", "idx"]) == 2
        assert "rag delete --all" in capsys.readouterr().err
    assert main(["rag", "delete", "--index-dir", "idx"]) == 2  # nothing named
    assert _listing(capsys).count("docs/") == 4  # all still there
    assert main(["rag", "delete", "--all", "--index-dir", "idx"]) == 0
    assert capsys.readouterr().out.count("deleted docs/") == 4
    assert _listing(capsys) == ""


def test_pgvector_index_ask_update_delete_from_the_cli(docs, request, monkeypatch, capsys):
    """The same lifecycle with `--set rag.store=pgvector` on a real PostgreSQL; a bad URL is one line."""
    from .conftest import pg_database

    pg_database(request, monkeypatch)
    pg = ["--index-dir", "idx", "--set", "rag.store=pgvector"]
    idx = [*pg, "--chunk-tokens", "64", "--chunk-overlap", "16"]
    assert main(["rag", "index", "docs", *idx]) == 0
    assert "4 added" in capsys.readouterr().out
    assert main(["rag", "ask", QUESTION, *pg, "--retrieval-only", "--top-k", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == "docs/pass.md"
    (docs / "pass.md").write_text("The pass statement is a placeholder that does nothing.")
    assert main(["rag", "index", "docs", *idx]) == 0
    assert "1 updated" in capsys.readouterr().out
    assert main(["rag", "delete", "docs/pass.md", *pg]) == 0
    assert "deleted docs/pass.md" in capsys.readouterr().out

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a new process, through the server, never sees it again
    proc = subprocess.run([sys.executable, "-m", "tuneforge.cli.main", "rag", "ask", QUESTION, *pg,
                           "--retrieval-only", "--top-k", "50"], capture_output=True, text=True, env=env, check=True)
    assert "docs/pass.md" not in proc.stdout and "docs/del.md" in proc.stdout
    assert "docs/pass.md" not in _listing(capsys)

    monkeypatch.setenv("TUNEFORGE_PG_URL", "postgresql://tf:hunter2@127.0.0.1:1/rag")
    assert main(["rag", "list", "--index-dir", "idx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach PostgreSQL at postgresql://tf:***@127.0.0.1:1/rag") and "hunter2" not in err
