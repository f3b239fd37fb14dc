"""General inputs read from registry packages: Wikipedia prose, human conversations, instructions."""

import importlib.util

import pytest

from tuneforge.eval import general_data as g
from tuneforge.eval.general_data import strip_wiki

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("gensim", "chitchat_dataset", "evals")),
    reason="general probe data (gensim, chitchat-dataset, evals) not installed",
)


def test_wikipedia_passages_are_prose_and_deterministic():
    passages = g.wikipedia_passages(30, seed=0)
    assert len(passages) == 30 and len({p.id for p in passages}) == 30
    assert [p.id for p in passages] == [p.id for p in g.wikipedia_passages(30, seed=0)]
    assert [p.id for p in passages] != [p.id for p in g.wikipedia_passages(30, seed=1)]
    for p in passages:
        assert len(p.text) >= g.MIN_PARAGRAPH_CHARS
        assert not any(mark in p.text for mark in ("[[", "{{", "<ref", "&lt;", "'''", "&nbsp;"))


def test_strip_wiki_keeps_link_text_and_drops_templates():
    text = "'''Anarchism''' is a [[political philosophy|philosophy]]{{cite|x={{y}}}}<ref>a source</ref> of [[society]]."
    assert strip_wiki(text) == "Anarchism is a philosophy of society."


def test_chat_inputs_alternate_and_can_end_on_the_user():
    for x in g.chat_inputs(10, seed=0, turns=3, open_ended=True):
        roles = [m["role"] for m in x.messages]
        assert roles == ["user", "assistant", "user"] and all(m["content"] for m in x.messages)
    whole = g.chat_inputs(5, seed=0, turns=6)
    assert all(len(x.messages) == 6 for x in whole)


def test_instructions_have_reference_answers_from_every_set():
    items = g.instruction_inputs(9, seed=0)
    assert len(items) == 9
    assert {i.id.split(":")[1].rsplit("-", 1)[0] for i in items} == {s.split("/")[0] for s in g.EVALS_SETS}
    for i in items:
        assert i.reference and i.messages[-1]["role"] == "user"
        assert sum(m["role"] == "system" for m in i.messages) <= 1  # proofreader's two system messages merged


def test_each_probe_gets_the_inputs_it_asks_for():
    assert len(g.drift_inputs(12)) == 12
    assert {x.kind for x in g.drift_inputs(12)} == {"text", "chat"}
    assert {x.kind for x in g.behaviour_inputs(12)} == {"chat", "instruction"}
    assert all(x.messages[-1]["role"] == "user" for x in g.behaviour_inputs(12))
