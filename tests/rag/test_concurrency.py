"""One writer at a time per RAG index: a second writer waits (saying for whom) or gives up; two indexers
started together both land whole."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tuneforge.cli.main import main

from .conftest import topic

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
IDX = ["--index-dir", "idx", "--chunk-tokens", "64", "--chunk-overlap", "16"]

HOLDER = textwrap.dedent(
    """
    import time
    from tuneforge.config.rag import RagConfig
    from tuneforge.rag.pipeline import writing

    with writing(RagConfig(index_dir="idx")):
        print("holding", flush=True)
        time.sleep(600)
    """
)


def _folder(root: Path, name: str, topics: list[str]) -> str:
    folder = root / name
    folder.mkdir()
    for t in topics:
        (folder / f"{t}.md").write_text(topic(t))
    return name


def test_a_second_writer_gives_up_or_waits_naming_the_first(run_dir, capsys):
    _folder(run_dir, "docs", ["pass", "del"])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=run_dir, env=ENV, stdout=subprocess.PIPE, text=True)
    waiter = None
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert main(["rag", "index", "docs", *IDX, "--set", "rag.write_wait_s=0"]) == 2
        assert f"the RAG index is in use by pid {holder.pid} " in capsys.readouterr().err
        waiter = subprocess.Popen([sys.executable, "-m", "tuneforge.cli.main", "rag", "index", "docs", *IDX],
                                  cwd=run_dir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = waiter.stderr.readline()  # blocks until the waiter has reached the lock
        assert f"waiting for pid {holder.pid} " in line, line
    finally:
        holder.kill()  # SIGKILL: the kernel releases its lock
        holder.wait()
    out, err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, err[-2000:]
    assert "2 added" in out


WORKER = textwrap.dedent(
    """
    import sys
    from tuneforge.cli.main import main
    from tuneforge.config.rag import RagConfig
    from tuneforge.rag.pipeline import load_embedder

    load_embedder(RagConfig())  # loaded before the start signal, so that both writers really overlap
    print("ready", flush=True)
    sys.stdin.readline()  # "go": both workers wake within a millisecond of each other
    for folder in sys.argv[1:]:
        code = main(["rag", "index", folder, *%r])
        if code:
            sys.exit(code)
    """
) % IDX


def test_two_indexers_at_once_both_land_whole(run_dir, capsys):
    batches = {"a": [["pass", "del"], ["return", "lambda"], ["assert", "raise"]],
               "b": [["if", "while"], ["for", "try"], ["with", "import"]]}
    workers = {}
    for w, groups in batches.items():
        folders = [_folder(run_dir, f"{w}{i}", g) for i, g in enumerate(groups)]
        workers[w] = subprocess.Popen([sys.executable, "-c", WORKER, *folders], cwd=run_dir, env=ENV,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
    for p in workers.values():
        assert p.stdout.readline().strip() == "ready"
    for p in workers.values():  # both start on an empty index at the same moment
        p.stdin.write("go\n")
        p.stdin.flush()
    written = 0
    for p in workers.values():
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        written += sum(int(n) for n in re.findall(r"(\d+) chunks written", out))

    capsys.readouterr()
    assert main(["rag", "list", "--index-dir", "idx"]) == 0
    listed = capsys.readouterr()
    expected = {f"{w}{i}/{t}.md" for w, groups in batches.items() for i, g in enumerate(groups) for t in g}
    assert {line.split("\t")[0] for line in listed.out.splitlines()} == expected
    assert f"12 documents, {written} chunks" in listed.err
    for name in ("a1/lambda.md", "b2/import.md"):  # every document is still readable and found
        question = topic(name.split("/")[1].removesuffix(".md"))[:200]
        assert main(["rag", "ask", question, "--index-dir", "idx", "--retrieval-only", "--top-k", "1"]) == 0
        assert f"[1] {name}" in capsys.readouterr().out


PG_WORKER = textwrap.dedent(
    """
    import json, sys
    from tuneforge.cli.main import main
    from tuneforge.config.rag import RagConfig
    from tuneforge.rag.pipeline import load_embedder

    load_embedder(RagConfig())
    print("ready", flush=True)
    sys.stdin.readline()
    args, folders = json.loads(sys.argv[1]), sys.argv[2:]
    for folder in folders:
        code = main(["rag", "index", folder, *args])
        if code:
            sys.exit(code)
    """
)


def test_two_machines_indexing_into_one_pgvector_table_at_once(run_dir, request, monkeypatch, capsys):
    """Two writers with their own index folders (so no shared file lock: as on two machines) write one
    PostgreSQL table at once, both creating it, and both indexing a shared folder: transactions and
    upserts keep every document whole and no chunk twice."""
    from tuneforge.rag.store import open_store

    from .conftest import pg_database

    pg_database(request, monkeypatch)  # exports TUNEFORGE_PG_URL, which the workers inherit
    env = {**ENV, "TUNEFORGE_PG_URL": os.environ["TUNEFORGE_PG_URL"]}
    shared = _folder(run_dir, "shared", ["with", "import"])
    batches = {"a": [["pass", "del"], ["return", "lambda"]], "b": [["if", "while"], ["for", "try"]]}
    workers = {}
    for w, groups in batches.items():
        folders = [_folder(run_dir, f"{w}{i}", g) for i, g in enumerate(groups)]
        args = ["--index-dir", f"idx-{w}", "--chunk-tokens", "64", "--chunk-overlap", "16",
                "--set", "rag.store=pgvector", "--set", "rag.pg_table=team_docs"]
        workers[w] = subprocess.Popen([sys.executable, "-c", PG_WORKER, json.dumps(args), shared, *folders],
                                      cwd=run_dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
    for p in workers.values():
        assert p.stdout.readline().strip() == "ready"
    for p in workers.values():
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in workers.values():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]

    from tuneforge.config.rag import RagConfig

    store = open_store(RagConfig(index_dir="idx-a", store="pgvector", pg_table="team_docs"))
    docs = store.documents()
    expected = {f"{w}{i}/{t}.md" for w, groups in batches.items() for i, g in enumerate(groups) for t in g}
    assert set(docs) == expected | {"shared/with.md", "shared/import.md"}
    for doc_id, info in docs.items():  # whole, in order, each chunk once
        assert [c.chunk_index for c in store.chunks_of(doc_id)] == list(range(info.chunks))
    assert store.count() == sum(info.chunks for info in docs.values())
    capsys.readouterr()
    question = topic("lambda")[:200]
    assert main(["rag", "ask", question, "--index-dir", "idx-b", "--retrieval-only", "--top-k", "1"]) == 0
    assert "[1] a1/lambda.md" in capsys.readouterr().out  # b's machine finds what a indexed
