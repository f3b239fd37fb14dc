from __future__ import annotations

import json

import pytest

from tuneforge.errors import UserError
from tuneforge.rag.documents import html_to_text, load_documents

from .conftest import topic


def test_bundled_pydoc_topics_have_stable_ids():
    docs = load_documents(["pydoc-topics"])
    assert len(docs) >= 70
    ids = [d.doc_id for d in docs]
    assert "pydoc-topics/pass" in ids and len(set(ids)) == len(ids)
    one = load_documents(["pydoc-topics/pass"])
    assert [d.doc_id for d in one] == ["pydoc-topics/pass"]
    assert one[0].content_hash == next(d for d in docs if d.doc_id == "pydoc-topics/pass").content_hash


def test_text_markdown_html_and_jsonl_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "pass.txt").write_text(topic("pass"))
    (folder / "sub" / "break.md").write_text("# Break\n\n" + topic("break"))
    (folder / "page.html").write_text(
        "<html><head><title>Del</title><script>var hidden = 1;</script></head>"
        f"<body><p>{topic('del')[:200]}</p><p>second &amp; last</p></body></html>"
    )
    rows = [{"id": "ret", "title": "Return", "text": topic("return")}, {"text": topic("raise")}]
    (folder / "more.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    docs = {d.doc_id: d for d in load_documents(["docs"])}
    assert set(docs) == {"docs/pass.txt", "docs/sub/break.md", "docs/page.html", "ret", "docs/more.jsonl#2"}
    assert docs["docs/sub/break.md"].title == "Break"
    html_doc = docs["docs/page.html"]
    assert html_doc.title == "Del" and "hidden" not in html_doc.text and "second & last" in html_doc.text
    assert docs["ret"].title == "Return"
    # The same file named directly gets the same id as through its folder.
    assert [d.doc_id for d in load_documents(["docs/pass.txt"])] == ["docs/pass.txt"]


def test_html_to_text_keeps_blocks_apart():
    title, text = html_to_text("<title>T</title><h1>Head</h1><p>one</p><p>two</p><style>x{}</style>")
    assert title == "T"
    assert text.split("\n\n")[-2:] == ["one", "two"] or "one\n\ntwo" in text


def test_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: text"):
        load_documents([str(bad)])
    with pytest.raises(UserError, match="not a bundled document set"):
        load_documents([str(tmp_path / "missing")])
    with pytest.raises(UserError, match="no such document"):
        load_documents(["pydoc-topics/not-a-topic"])


@pytest.mark.parametrize(("line", "field"), [
    (b'["a list"]', "(record): expected a JSON object"),
    (b'{"text": 5}', "text: "),
    (b'{"id": {"a": 1}, "text": "x"}', "id: "),
    (b'{"text": "x", "title": ["a"]}', "title: "),
    (b'{"text": "x"', "(record): invalid JSON"),
    (b'{"text": "caf\xe9"}', "(line): not UTF-8"),
])
def test_malformed_document_line_is_a_one_line_error_from_the_cli(tmp_path, capsys, line, field):
    from tuneforge.cli.main import main

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "a fine line"}\n' + line + b"\n")
    assert main(["rag", "index", str(bad), "--index-dir", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:2: {field}") and err.count("\n") == 1, err
