"""Mixture sampling: rates, counts, repeats and task tags; per-task loss on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.config import load_recipe
from tuneforge.config.strategies import MixtureConfig
from tuneforge.errors import UserError
from tuneforge.strategies.mixture import mix_files, mix_tasks, read_jsonl, task_counts, task_rates


def _rows(task: str, n: int) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": f"{task} question {i}"},
                      {"role": "assistant", "content": f"{task} answer {i}"}],
         "meta": {"id": f"{task}-{i}"}}
        for i in range(n)
    ]


def _cfg(**kw) -> MixtureConfig:
    tasks = kw.pop("tasks", [{"name": "big", "data": {"path": "x"}}, {"name": "small", "data": {"path": "y"}}])
    return MixtureConfig(tasks=tasks, **kw)


def test_rates_follow_the_strategy():
    sizes = {"big": 900, "small": 100}
    assert task_rates(sizes, "proportional") == pytest.approx({"big": 0.9, "small": 0.1})
    # T=2: sqrt(900)=30, sqrt(100)=10 -> 0.75 / 0.25: the small task is lifted.
    assert task_rates(sizes, "temperature", temperature=2.0) == pytest.approx({"big": 0.75, "small": 0.25})
    assert task_rates(sizes, "fixed", weights={"big": 1, "small": 3}) == pytest.approx({"big": 0.25, "small": 0.75})
    # A cap counts the big task as 100 examples: an even mix.
    assert task_rates(sizes, "proportional", cap=100) == pytest.approx({"big": 0.5, "small": 0.5})


def test_empty_task_is_a_user_error():
    with pytest.raises(UserError, match="small"):
        task_rates({"big": 10, "small": 0}, "proportional")


def test_counts_respect_total_and_repeat_limit():
    sizes = {"big": 900, "small": 100}
    counts = task_counts(sizes, {"big": 0.5, "small": 0.5}, total=1000, max_repeats=2.0)
    # small may be drawn at most 200 times; its surplus goes to big.
    assert counts == {"big": 800, "small": 200}
    assert sum(task_counts(sizes, {"big": 0.31, "small": 0.69}, total=777).values()) == 777


def test_mixture_tags_every_example_and_upsamples_small_tasks():
    mixed, shares = mix_tasks({"big": _rows("big", 90), "small": _rows("small", 10)},
                              _cfg(strategy="fixed", tasks=[
                                  {"name": "big", "data": {"path": "x"}, "weight": 1},
                                  {"name": "small", "data": {"path": "y"}, "weight": 1}]))
    assert len(mixed) == 100
    by_task = {s.task: s for s in shares}
    assert by_task["small"].examples == 40  # capped at 4 repeats of 10
    assert by_task["small"].repeats == pytest.approx(4.0)
    assert sum(1 for r in mixed if r["meta"]["task"] == "small") == 40
    assert all(r["meta"]["task"] in {"big", "small"} for r in mixed)
    # Examples keep their own metadata next to the tag.
    assert all(r["meta"]["id"].startswith(r["meta"]["task"]) for r in mixed)
    # Every small example appears exactly 4 times (whole passes, not random repeats).
    ids = [r["meta"]["id"] for r in mixed if r["meta"]["task"] == "small"]
    assert {ids.count(i) for i in set(ids)} == {4}


def test_mixture_is_reproducible_and_shuffled(tmp_path: Path):
    import json

    files = {}
    for task, n in (("big", 50), ("small", 8)):
        files[task] = tmp_path / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps(r) + "\n" for r in _rows(task, n)))
    cfg = _cfg(strategy="temperature", temperature=3.0)
    a, _ = mix_files(files, tmp_path / "a.jsonl", cfg, seed=1)
    b, _ = mix_files(files, tmp_path / "b.jsonl", cfg, seed=1)
    c, _ = mix_files(files, tmp_path / "c.jsonl", cfg, seed=2)
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()
    tasks = [r["meta"]["task"] for r in read_jsonl(a)]
    assert tasks != sorted(tasks)  # interleaved, not one task after the other


def test_recipe_checks_mixture_fields(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "mixture:\n  strategy: fixed\n  tasks:\n"
        "    - {name: a, data: {path: x}, weight: 1}\n"
        "    - {name: a, data: {path: y}}\n"
    )
    with pytest.raises(UserError) as err:
        load_recipe(bad)
    text = " ".join(err.value.problems)
    assert "unique" in text


def test_task_losses_group_by_tag(tokenizer, tiny_model):
    from tuneforge.strategies.mixture import tag
    from tuneforge.strategies.task_loss import task_losses

    rows = tag(_rows("a", 3), "a") + tag(_rows("b", 2), "b")
    losses = task_losses(tiny_model, tokenizer, rows, batch_size=2)
    assert set(losses) == {"a", "b"}
    assert all(v > 0 for v in losses.values())
    # Batching must not change the numbers (padding is masked out).
    one_by_one = task_losses(tiny_model, tokenizer, rows, batch_size=1)
    assert losses == pytest.approx(one_by_one, rel=1e-4)
