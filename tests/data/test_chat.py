from __future__ import annotations

from tuneforge.data.chat import IGNORE_INDEX, tokenize_conversation


def _trained_text(tokenizer, enc):
    return tokenizer.decode([t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE_INDEX])


def test_only_assistant_tokens_are_trained(tokenizer):
    messages = [
        {"role": "user", "content": "Review: a fine film. Sentiment?"},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "yes"},
    ]
    enc = tokenize_conversation(tokenizer, messages)
    assert _trained_text(tokenizer, enc) == "positive<|im_end|>\nyes<|im_end|>\n"
    # Exactly which positions: those after each "<|im_start|>assistant\n" header up to its end-of-turn.
    ids = enc["input_ids"]
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    starts = [i + len(header) for i in range(len(ids)) if ids[i : i + len(header)] == header]
    trained = [i for i, lab in enumerate(enc["labels"]) if lab != IGNORE_INDEX]
    expected = []
    for s in starts:
        end = s
        while ids[end] != tokenizer.convert_tokens_to_ids("<|im_end|>"):
            end += 1
        expected += list(range(s, end + 2))  # the answer, <|im_end|> and the newline after it
    assert trained == expected


def test_last_assistant_only(tokenizer):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "second"},
    ]
    enc = tokenize_conversation(tokenizer, messages, train_on="last_assistant")
    assert _trained_text(tokenizer, enc) == "second<|im_end|>\n"


def test_truncation_keeps_alignment(tokenizer):
    messages = [{"role": "user", "content": "x " * 50}, {"role": "assistant", "content": "y"}]
    enc = tokenize_conversation(tokenizer, messages, max_length=20)
    assert len(enc["input_ids"]) == len(enc["labels"]) == len(enc["attention_mask"]) == 20
