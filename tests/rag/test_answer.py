from __future__ import annotations

from tuneforge.rag.answer import build_messages, format_sources, generate_answers, parse_citations
from tuneforge.rag.store import Hit

from .conftest import topic


def _hits() -> list[Hit]:
    return [Hit(f"pydoc-topics/{t}#0", f"pydoc-topics/{t}", t, "pydoc", topic(t), 0.5) for t in ("pass", "del", "return")]


def test_prompt_numbers_sources_and_respects_the_token_budget(tokenizer):
    messages = build_messages("What does pass do?", _hits(), tokenizer, max_context_tokens=2000)
    user = messages[-1]["content"]
    assert messages[0]["role"] == "system" and "[1]" in messages[0]["content"]
    assert user.index("[1] pass") < user.index("[2] del") < user.index("[3] return")
    assert "Question: What does pass do?" in user
    small = format_sources(_hits(), tokenizer, max_tokens=120)
    assert "[1] pass" in small and "[2]" not in small  # lowest-ranked sources are cut first
    assert len(tokenizer(small, add_special_tokens=False)["input_ids"]) <= 121
    tiny = format_sources(_hits(), tokenizer, max_tokens=10)
    assert tiny and len(tokenizer(tiny, add_special_tokens=False)["input_ids"]) <= 11  # best one, truncated


def test_citations_are_parsed_in_order_and_validated():
    assert parse_citations("Nothing happens [2]. See also [1, 2] and [7].", 3) == [2, 1]
    assert parse_citations("no citation", 3) == []


def test_batched_generation_matches_one_by_one(tiny_model, tokenizer):
    conversations = [build_messages(q, _hits()[:1], tokenizer, 200) for q in ("What does pass do?", "Why?")]
    batched = generate_answers(tiny_model, tokenizer, conversations, max_new_tokens=6, batch_size=2)
    single = [generate_answers(tiny_model, tokenizer, [c], max_new_tokens=6, batch_size=1)[0] for c in conversations]
    assert len(batched) == 2 and all(isinstance(a, str) for a in batched)
    assert batched == single  # left padding does not change greedy answers
