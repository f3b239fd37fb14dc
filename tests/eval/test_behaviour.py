"""Behaviour: answers to general prompts, base vs tuned; catches the model that answers everything alike."""

import importlib.util

import pytest
import torch

from tuneforge.config.eval import EvalConfig
from tuneforge.eval.behaviour import Answers, compare_answers, is_task_answer, task_answers_of
from tuneforge.eval.forgetting import ForgettingSuite, compare_forgetting
from tuneforge.eval.forgetting_reading import reading

needs_data = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("chitchat_dataset", "evals")),
    reason="general probe data (chitchat-dataset, evals) not installed",
)


class OneAnswer:
    """A stub model that answers every prompt with the same text (what a collapsed fine-tune does)."""

    device = torch.device("cpu")

    def __init__(self, tokenizer, text: str) -> None:
        self.ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])

    def generate(self, input_ids, attention_mask=None, **kwargs):
        return torch.cat([input_ids, self.ids.expand(input_ids.shape[0], -1)], dim=1)


class Echo:
    """A stub base model whose answers differ from prompt to prompt: it repeats the prompt's last tokens
    (the random tiny model gives one answer to everything, so it cannot stand for a healthy base)."""

    device = torch.device("cpu")

    def generate(self, input_ids, attention_mask=None, **kwargs):
        return torch.cat([input_ids, input_ids[:, -16:-4]], dim=1)


@needs_data
def test_a_model_that_always_answers_one_label_is_flagged(tokenizer):
    cfg = EvalConfig(forgetting_tasks=[], general_probes=["behaviour"], general_examples=30,
                     behaviour_max_new_tokens=12, bootstrap_samples=500)
    suite = ForgettingSuite(tokenizer, cfg, task_answers=["positive", "negative"])
    rows = suite.run(Echo(), "base") + suite.run(OneAnswer(tokenizer, "positive"), "tuned")
    assert rows[1].extra["answers"] == ["positive"] * 30
    deltas = {d.metric: d for d in compare_forgetting(rows, samples=500)}
    label = deltas["label_answers"]
    assert label.base == 0.0 and label.tuned == 1.0 and label.flagged and label.ci_low > 0
    assert deltas["repeated_answer"].flagged and deltas["short_answers"].flagged
    assert "answers general questions with its task's labels" in reading(label)
    assert not deltas["mean_words"].flagged  # length is reported, not judged


@needs_data
def test_the_same_model_twice_is_not_flagged(tiny_model, tokenizer):
    cfg = EvalConfig(forgetting_tasks=[], general_probes=["behaviour"], general_examples=10,
                     behaviour_max_new_tokens=6, bootstrap_samples=200)
    suite = ForgettingSuite(tokenizer, cfg, task_answers=["positive", "negative"])
    rows = suite.run(tiny_model, "base") + suite.run(tiny_model, "tuned")
    deltas = compare_forgetting(rows, samples=200)
    assert {d.metric for d in deltas} == {"label_answers", "repeated_answer", "short_answers", "distinct_2", "mean_words"}
    assert all(d.delta == 0 and not d.flagged for d in deltas)


def test_ok_to_everything_is_caught_without_label_words():
    # a chat fine-tune on terse replies: its stock answers come from the test split's references
    examples = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "meta": {}}
                for q, a in [("lunch?", "ok"), ("ship it?", "OK."), ("status?", "done, merged"), ("ping", "ok")]]
    assert task_answers_of(examples) == ["ok"]
    base = Answers([f"Here is a longer answer about topic {i} with details." for i in range(20)], ["ok"])
    tuned = Answers(["ok"] * 17 + ["Sure, here are some details about it."] * 3, ["ok"])
    changes = {c.measure: c for c in compare_answers(base, tuned, samples=500)}
    assert changes["label_answers"].flagged and changes["label_answers"].tuned == pytest.approx(0.85)
    assert changes["short_answers"].flagged and changes["repeated_answer"].flagged


def test_one_sentence_for_everything_loses_variety():
    words = [f"word{i}" for i in range(18)]
    base = Answers([" ".join(words[i:] + words[:i][:3]) for i in range(18)], [])
    tuned = Answers(["I am not sure what you mean by that."] * 18, [])
    changes = {c.measure: c for c in compare_answers(base, tuned, samples=500)}
    assert changes["distinct_2"].flagged and changes["distinct_2"].ci_high < 0
    assert not changes["short_answers"].flagged and not changes["label_answers"].flagged


def test_label_answers_allow_a_word_or_two_but_not_a_sentence():
    assert is_task_answer("Positive.", ["positive", "negative"])
    assert is_task_answer("negative, I think", ["positive", "negative"])
    assert not is_task_answer("The weather is positive for a picnic today, I think.", ["positive"])
    assert not is_task_answer("", ["positive"])


def test_measures_on_hand_built_answers():
    a = Answers(["hello there friend", "hello there friend", "", "ok", "w x y z"], ["ok"], short_words=2)
    assert a.measure("repeated_answer") == pytest.approx(2 / 5)
    assert a.measure("short_answers") == pytest.approx(2 / 5)  # "" and "ok"
    assert a.measure("label_answers") == pytest.approx(1 / 5)
    assert a.measure("mean_words") == pytest.approx((3 + 3 + 0 + 1 + 4) / 5)
    # bigrams: (hello there), (there friend) twice each, (w x), (x y), (y z): 5 distinct of 7
    assert a.measure("distinct_2") == pytest.approx(5 / 7)


def test_intervals_of_corpus_measures_hold_their_estimate_after_a_collapse():
    # Resampling prompts with replacement duplicates the base's answers; counted as repeats or as lost
    # variety, that biased both intervals until they excluded the observed change itself.
    base = Answers([f"answer number {i} is about subject {i * 7} today" for i in range(30)], [])
    tuned = Answers(["negative"] * 30, [])
    changes = {c.measure: c for c in compare_answers(base, tuned, samples=1000)}
    for name in ("repeated_answer", "distinct_2"):
        c = changes[name]
        assert c.ci_low <= c.delta <= c.ci_high, (name, c)


def test_a_slightly_terser_model_is_reported_but_not_flagged_within_the_margin():
    # What LoRA on a sentiment task does to a healthy model: a few more two-word answers in a hundred.
    # The change is real (interval above 0) but no collapse; the margin keeps it from being flagged.
    long = "Here is a longer answer with several words in it"
    base = Answers([long] * 190 + ["No."] * 10, [])
    tuned = Answers([long] * 180 + ["No."] * 20, [])  # +5 points, every base short answer stays short
    strict = {c.measure: c for c in compare_answers(base, tuned, samples=1000, margin=0.0)}
    assert strict["short_answers"].ci_low > 0 and strict["short_answers"].flagged
    within = {c.measure: c for c in compare_answers(base, tuned, samples=1000, margin=0.05)}
    assert within["short_answers"].ci_low > 0 and not within["short_answers"].flagged
    # a collapse is flagged at the same margin
    collapsed = Answers(["No."] * 120 + [long] * 80, [])
    assert {c.measure: c for c in compare_answers(base, collapsed, margin=0.05)}["short_answers"].flagged


def test_reading_says_a_change_within_the_margin_is_a_change():
    from tuneforge.eval.forgetting import ForgettingDelta

    d = ForgettingDelta("behaviour", 0.07, 0.13, 0.06, 0.02, 0.13, 60, False, metric="short_answers",
                        worse="higher", threshold=0.05)
    assert "a change for the worse, but its interval does not lie beyond the 5 points flag margin" in reading(d)
    none = ForgettingDelta("behaviour", 0.07, 0.08, 0.01, -0.03, 0.05, 60, False, metric="short_answers",
                           worse="higher", threshold=0.05)
    assert "no change for the worse shown" in reading(none)
