"""Documents to index: text, Markdown, HTML and JSONL files or folders, and bundled document sets.

Every document gets a stable id, so re-ingesting the same file updates it instead of adding a copy:

* a file: its path relative to the current folder (absolute when outside it), with ``/`` separators;
* a JSONL line: the line's ``id`` field, else ``<file id>#<line number>``;
* a bundled set: ``<set>/<name>`` (``pydoc-topics/assert``).

The content hash (SHA-256 of the text) tells the indexer whether a known document changed.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import platform
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from tuneforge.errors import UserError

TEXT_SUFFIXES = {".txt", ".text", ".rst"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
JSONL_SUFFIXES = {".jsonl"}
SUPPORTED = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES


@dataclass
class Document:
    doc_id: str
    text: str
    title: str = ""
    source: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


# --- bundled sets -------------------------------------------------------------------------------------


def pydoc_topics() -> list[Document]:
    """Python's own reference topics (``pydoc_data.topics``, shipped with CPython: nothing to install)."""
    spec = importlib.util.find_spec("pydoc_data.topics")
    if spec is None:
        raise UserError("this Python has no pydoc_data.topics (some distributions strip it); index your own files")
    from pydoc_data.topics import topics

    source = f"pydoc_data.topics (Python {platform.python_version()})"
    docs = []
    for name in sorted(topics):
        text = topics[name].strip()
        title = text.splitlines()[0].strip() if text else name
        docs.append(Document(doc_id=f"pydoc-topics/{name}", text=text, title=title, source=source))
    return docs


BUNDLED_SETS = {"pydoc-topics": pydoc_topics}


# --- files --------------------------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    """Visible text of an HTML page: scripts and styles dropped, block elements become line breaks."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section", "article",
              "table", "ul", "ol", "dd", "dt", "blockquote", "hr"}
    SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> tuple[str, str]:
    """(title, visible text) of an HTML document."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    text = html.unescape("".join(parser.parts))
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n\s*\n+", "\n\n", text)
    return parser.title.strip(), text.strip()


def file_id(path: Path) -> str:
    """Stable id of a file: relative to the current folder when inside it, else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _first_heading(text: str, fallback: str) -> str:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:200]
    return fallback


def load_file(path: Path) -> list[Document]:
    """Documents in one file (one per file, or one per line for JSONL)."""
    suffix = path.suffix.lower()
    did = file_id(path)
    if suffix in JSONL_SUFFIXES:
        return list(_jsonl_documents(path, did))
    raw = _read_text(path)
    if suffix in HTML_SUFFIXES:
        title, text = html_to_text(raw)
        title = title or path.stem
    else:
        text = raw.strip()
        title = _first_heading(text, path.stem)
    if not text:
        return []
    return [Document(doc_id=did, text=text, title=title, source=str(path))]


def jsonl_objects(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every line of a JSONL file; any malformed line is a one-line
    ``file:line: field: problem`` UserError (invalid JSON, not an object, not UTF-8)."""
    from tuneforge.data.io import iter_jsonl

    try:
        for lineno, row in iter_jsonl(path):
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: (record): expected a JSON object ({what}), "
                                f"got {type(row).__name__}")
            yield lineno, row
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}:{_bad_utf8_line(path)}: (record): not UTF-8 text ({exc.reason})") from None


def _bad_utf8_line(path: Path) -> int:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 1


def _jsonl_documents(path: Path, did: str) -> Iterator[Document]:
    for lineno, row in jsonl_objects(path, "with a 'text' field"):
        text = row.get("text", row.get("content"))
        if not isinstance(text, str):
            raise UserError(f"{path}:{lineno}: text: required string field is missing (or use 'content')")
        if row.get("id") is not None and not isinstance(row["id"], str | int):
            raise UserError(f"{path}:{lineno}: id: expected a string or an integer, got {type(row['id']).__name__}")
        if row.get("title") is not None and not isinstance(row["title"], str):
            raise UserError(f"{path}:{lineno}: title: expected a string, got {type(row['title']).__name__}")
        doc_id = str(row["id"]) if row.get("id") is not None else f"{did}#{lineno}"
        title = str(row.get("title") or _first_heading(text, doc_id))
        meta = {k: str(v) for k, v in row.items() if k not in {"id", "text", "content", "title"}}
        if text.strip():
            yield Document(doc_id=doc_id, text=text.strip(), title=title, source=f"{path}:{lineno}", metadata=meta)


def load_documents(sources: list[str]) -> list[Document]:
    """Documents from bundled set names, files and folders (folders: every supported file, recursively)."""
    docs: list[Document] = []
    for src in sources:
        if src in BUNDLED_SETS:
            docs += BUNDLED_SETS[src]()
            continue
        set_name, _, member = src.partition("/")
        if set_name in BUNDLED_SETS and member and not Path(src).exists():  # one document of a set
            chosen = [d for d in BUNDLED_SETS[set_name]() if d.doc_id == src]
            if not chosen:
                raise UserError(f"{src}: no such document in the bundled set {set_name!r}")
            docs += chosen
            continue
        path = Path(src).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not files:
                raise UserError(f"{path}: no {', '.join(sorted(SUPPORTED))} files in this folder")
            for f in files:
                docs += load_file(f)
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED:
                raise UserError(f"{path}: unsupported file type {path.suffix!r}; use {', '.join(sorted(SUPPORTED))}")
            docs += load_file(path)
        else:
            known = ", ".join(BUNDLED_SETS)
            raise UserError(f"{src}: no such file or folder, and not a bundled document set ({known})")
    seen: dict[str, str] = {}
    for d in docs:
        if d.doc_id in seen:
            raise UserError(f"document id {d.doc_id!r} appears twice ({seen[d.doc_id]} and {d.source}); ids must be unique")
        seen[d.doc_id] = d.source
    return docs
