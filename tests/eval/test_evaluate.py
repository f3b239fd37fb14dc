"""evaluate_split on real review text with the tiny model: metrics, intervals, k-shot prompts."""

import json

import pytest

from tests.eval.conftest import movie_record, write_jsonl
from tuneforge.errors import UserError
from tuneforge.eval.evaluate import evaluate_split, load_examples, pick_shots, pop_predictions, with_shots


def test_zero_shot_row_has_accuracy_interval_and_predictions(tiny_model, tokenizer, splits, small_eval_cfg):
    test, _ = splits
    row = evaluate_split(tiny_model, tokenizer, test, system="base zero-shot", cfg=small_eval_cfg)
    preds = pop_predictions(row)
    acc = row.metrics["accuracy"]
    assert row.task == "sentiment" and acc.n == 8
    assert acc.ci_low <= acc.value <= acc.ci_high
    assert acc.value == pytest.approx(sum(p["scores"]["accuracy"] for p in preds) / 8)
    assert {"ref_loss", "perplexity"} <= set(row.metrics)
    assert row.metrics["perplexity"].value > 1
    assert [p["id"] for p in preds] == [f"test-{i}" for i in range(8)]
    assert all(p["reference"] in ("fresh", "rotten") and "extracted_label" in p for p in preds)
    assert "predictions" not in row.extra  # popped: results.json stays small


def test_k_shot_draws_from_train_and_costs_prompt_tokens(tiny_model, tokenizer, splits, small_eval_cfg):
    test, train = splits
    zero = evaluate_split(tiny_model, tokenizer, test, system="base zero-shot", cfg=small_eval_cfg)
    three = evaluate_split(tiny_model, tokenizer, test, system="base 3-shot", train_file=train, shots=3, cfg=small_eval_cfg)
    assert three.prompt_tokens_per_request > zero.prompt_tokens_per_request
    assert three.extra["shots"] == 3
    with pytest.raises(UserError, match="train"):
        evaluate_split(tiny_model, tokenizer, test, system="x", shots=2, cfg=small_eval_cfg)


def test_shots_are_deterministic_cover_labels_and_never_come_from_test(splits):
    test, train = splits
    train_rows, test_rows = load_examples(train), load_examples(test)
    shots = pick_shots(train_rows, 3, seed=1)
    assert shots == pick_shots(train_rows, 3, seed=1)
    assert {s["meta"]["label"] for s in shots} == {"fresh", "rotten"}
    test_texts = {r["messages"][1]["content"] for r in test_rows}
    assert not any(s["messages"][1]["content"] in test_texts for s in shots)
    prompt = test_rows[0]["messages"][:-1]
    conv = with_shots(prompt, shots)
    assert conv[0]["role"] == "system" and conv[-1] == prompt[-1]
    assert [m["role"] for m in conv[1:-1]] == ["user", "assistant"] * 3


def test_k_shot_never_shows_a_test_example_even_if_train_contains_it(tiny_model, tokenizer, tmp_path, splits, small_eval_cfg):
    test, train = splits
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text(test.read_text().splitlines()[0] + "\n" + train.read_text())
    row = evaluate_split(tiny_model, tokenizer, test, system="base 2-shot", train_file=leaky, shots=20,
                         max_examples=2, cfg=small_eval_cfg)
    first_test_text = json.loads(test.read_text().splitlines()[0])["messages"][1]["content"]
    # 20 shots requested, 20 clean train rows exist: the leaked test row must not be among them
    assert row.prompt_tokens_per_request > 0
    from tuneforge.eval.evaluate import pick_shots as ps

    clean = [r for r in load_examples(leaky) if r["messages"][1]["content"] != first_test_text]
    assert len(ps(clean, 20, 0)) == 20


def test_free_text_tasks_get_overlap_metrics_and_a_per_task_breakdown(tiny_model, tokenizer, tmp_path, rt_rows, small_eval_cfg):
    records = [movie_record(r, f"m-{i}") for i, r in enumerate(rt_rows[:4])]
    records += [movie_record(r, f"t-{i}", task="title-translation") for i, r in enumerate(rt_rows[4:8])]
    test = write_jsonl(tmp_path / "test.jsonl", records)
    row = evaluate_split(tiny_model, tokenizer, test, system="base zero-shot", cfg=small_eval_cfg)
    assert row.task == "all"
    assert {"exact_match", "token_f1", "rouge_l"} <= set(row.metrics)
    assert "bleu" not in row.metrics  # only one of the two tasks is a translation
    assert set(row.extra["per_task"]) == {"movie", "title-translation"}
    assert {"bleu", "chrf"} <= set(row.extra["per_task"]["title-translation"])


def test_bad_split_lines_name_file_and_line(tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n')
    with pytest.raises(UserError, match=r"test.jsonl:2"):
        load_examples(bad)
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(UserError, match=r"test.jsonl:1: messages"):
        load_examples(bad)
    with pytest.raises(UserError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")


def test_unknown_metric_is_a_user_error(tiny_model, tokenizer, splits, small_eval_cfg):
    cfg = small_eval_cfg.model_copy(update={"metrics": ["acuracy"]})
    with pytest.raises(UserError, match="acuracy"):
        evaluate_split(tiny_model, tokenizer, splits[0], system="x", cfg=cfg)


def test_classification_answers_are_capped_but_free_text_is_not(tiny_model, tokenizer, tmp_path, splits, rt_rows):
    from tuneforge.config.eval import EvalConfig

    cfg = EvalConfig(max_new_tokens=20, classification_max_new_tokens=2, temperature=1.5, bootstrap_samples=50,
                     reference_loss=False)
    row = evaluate_split(tiny_model, tokenizer, splits[0], system="s", max_examples=4, cfg=cfg)
    assert row.extra["generation"]["max_new_tokens"] == 2
    from tuneforge.data.chat import prompt_messages
    from tuneforge.eval.generation import generate_batch

    prompts = [prompt_messages(e["messages"])[0] for e in load_examples(splits[0], 4)]
    capped = generate_batch(tiny_model, tokenizer, prompts, max_new_tokens=2, batch_size=cfg.batch_size, temperature=1.5)
    assert [p["prediction"] for p in pop_predictions(row)] == capped  # same sampled noise, cut at 2 tokens
    free = write_jsonl(tmp_path / "free.jsonl", [movie_record(r, f"m-{i}") for i, r in enumerate(rt_rows[:2])])
    assert evaluate_split(tiny_model, tokenizer, free, system="s", cfg=cfg).extra["generation"]["max_new_tokens"] == 20
