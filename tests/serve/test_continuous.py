"""Continuous batching: rows join a running batch and leave it mid-decode without changing any answer.

The reference is transformers' own ``generate``, greedy, one prompt at a time (no batching, its own
cache): every answer the engine gives while other rows join, leave or use other adapters must be the
same text.
"""

from __future__ import annotations

import threading

import pytest
import torch

from tuneforge.serve.engine import BASE, Engine, Row

PROMPTS = ["Hello there", "What is 2 plus 2, and why is that so?", "x",
           "A much longer prompt about many different things, each of them worth a word or two"]


class Answer:
    """Collects one row's events; ``on_delta`` runs in the worker thread after each piece of text."""

    def __init__(self, on_delta=None) -> None:
        self.pieces: list[str] = []
        self.end: tuple[str, object] | None = None
        self.done = threading.Event()
        self.on_delta = on_delta

    def emit(self, kind: str, payload) -> None:
        if kind == "delta":
            self.pieces.append(payload)
            if self.on_delta:
                self.on_delta(len(self.pieces))
        else:
            self.end = (kind, payload)
            self.done.set()

    @property
    def text(self) -> str:
        assert self.done.wait(60), "the row never finished"
        return "".join(self.pieces)


def row(tokenizer, prompt: str, answer: Answer, max_tokens: int, adapter: str | None = BASE, **kw) -> Row:
    return Row(prompt_ids=tokenizer(prompt)["input_ids"], adapter=adapter, max_tokens=max_tokens,
               emit=answer.emit, **kw)


def reference(model, tokenizer, prompt: str, max_tokens: int) -> str:
    """Greedy text from transformers' generate, alone."""
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id or 0)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.fixture()
def engine(tiny_model, tokenizer):
    eng = Engine(tiny_model, tokenizer, max_batch=4, max_waiting=8, batch_window_s=0)
    yield eng
    eng.stop(10)


def test_rows_joining_and_leaving_mid_decode_get_the_one_at_a_time_greedy_answer(engine, tiny_model, tokenizer):
    lengths = [3, 20, 9, 14]  # the first row leaves early, from slot 0, while the second keeps going
    expected = [reference(tiny_model, tokenizer, p, n) for p, n in zip(PROMPTS, lengths, strict=True)]
    answers = [Answer() for _ in PROMPTS]

    def join_late(n_pieces: int) -> None:  # in the worker thread, between two decoding steps
        if n_pieces == 6:
            engine.submit([row(tokenizer, PROMPTS[i], answers[i], lengths[i]) for i in (2, 3)])

    answers[1].on_delta = join_late
    engine.start()
    engine.submit([row(tokenizer, PROMPTS[i], answers[i], lengths[i]) for i in (0, 1)])
    assert [a.text for a in answers] == expected
    assert engine.stats["joined_running"] == 2  # the late rows joined the running batch
    assert engine.stats["max_rows_in_batch"] >= 2
    # one prefill for the first pair and one for the late pair: nobody waited for the batch to drain
    assert engine.stats["batches"] == 2
    assert all(a.end[0] == "done" for a in answers)


def test_a_row_that_arrives_while_a_long_row_decodes_starts_before_it_ends(engine, tokenizer):
    long, short = Answer(), Answer()
    started_at: list[int] = []
    short.on_delta = lambda n: started_at.append(len(long.pieces)) if n == 1 else None
    long.on_delta = lambda n: engine.submit([row(tokenizer, "hi", short, 4)]) if n == 2 else None
    engine.start()
    engine.submit([row(tokenizer, "Tell a long story", long, 40)])
    assert short.text and long.text
    assert started_at and started_at[0] < 5  # its first token came right after it joined, not after 40


def test_rows_of_different_adapters_share_decoding_steps_and_keep_their_answers(tiny_model_dir, tokenizer,
                                                                                lora_runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def fresh():
        return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()

    adapters = {name: run / "adapter" for name, run in lora_runs.items()}
    n = 10
    plan = [(BASE, PROMPTS[0]), ("lora-a", PROMPTS[0]), ("lora-b", PROMPTS[1]), ("lora-a", PROMPTS[3])]
    expected = []
    for adapter, prompt in plan:
        model = fresh() if adapter is BASE else PeftModel.from_pretrained(fresh(), str(adapters[adapter])).eval()
        expected.append(reference(model, tokenizer, prompt, n))
    assert expected[0] != expected[1]  # the adapter changes the answer, so a mix-up would show

    # every Linear packed (the tiny model's are below the default size), answers compared with plain ones
    engine = Engine(fresh(), tokenizer, adapters, max_batch=4, max_waiting=4, batch_window_s=0, pack_weights=0)
    assert engine.packed_linears == 15
    answers = [Answer() for _ in plan]
    engine.start()
    try:
        engine.submit([row(tokenizer, p, a, n, adapter=ad) for (ad, p), a in zip(plan, answers, strict=True)])
        assert [a.text for a in answers] == expected
        # all four rows, of three adapters, decoded together: n - 1 steps after the shared prefill
        assert engine.stats["max_rows_in_batch"] == 4 and engine.stats["steps"] == n - 1
    finally:
        engine.stop(10)


def test_a_cancelled_row_leaves_at_the_next_step_and_the_others_continue(engine, tiny_model, tokenizer):
    gone, stays = Answer(), Answer()
    dropped_when: list[int] = []

    def hang_up(n_pieces: int) -> None:
        if n_pieces == 3:
            engine.cancel([gone_row])
        if n_pieces == 4:  # one step later
            dropped_when.append(engine.stats["rows_dropped"])

    stays.on_delta = hang_up
    gone_row = row(tokenizer, "Tell a long story", gone, 500)
    engine.start()
    engine.submit([gone_row, row(tokenizer, PROMPTS[1], stays, 12)])
    assert stays.text == reference(tiny_model, tokenizer, PROMPTS[1], 12)
    assert dropped_when == [1]  # dropped at the very next step, not at the end of the batch
    assert len(gone.pieces) <= 4 and gone.end is None  # no events after the cancel
    assert engine.in_flight == 0


def test_stop_sequences_and_token_caps_hold_per_row_in_a_shared_batch(engine, tiny_model, tokenizer):
    full = reference(tiny_model, tokenizer, PROMPTS[3], 16)
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), full
    stopped, capped, free = Answer(), Answer(), Answer()
    engine.start()
    engine.submit([row(tokenizer, PROMPTS[3], stopped, 16, stop=[stop]),
                   row(tokenizer, PROMPTS[3], capped, 5),
                   row(tokenizer, PROMPTS[3], free, 16)])
    assert stopped.text == full[:full.index(stop)] and stopped.end[1]["finish_reason"] == "stop"
    assert capped.text == reference(tiny_model, tokenizer, PROMPTS[3], 5)
    assert capped.end[1] == {"finish_reason": "length", "prompt_tokens": len(tokenizer(PROMPTS[3])["input_ids"]),
                             "completion_tokens": 5}
    assert free.text == full


def test_the_kv_cache_moves_only_the_leaving_rows_slot():
    from tuneforge.serve.kv_cache import SlotCache

    cache = SlotCache(n_layers=1, slots=3, capacity=8)
    positions, mask = cache.plan_prefill([0, 1, 2], [2, 4, 3])
    k = torch.arange(3 * 4, dtype=torch.float).reshape(3, 1, 4, 1)  # [rows, heads, columns, dim]
    keys, _ = cache.update(k, k, 0)
    assert positions.tolist() == [[0, 0, 0, 1], [0, 1, 2, 3], [0, 0, 1, 2]]
    assert mask[0, 0, 3].tolist() == [False, False, True, True]  # row 0 sees its own two columns only
    cache.move(2, 0)  # row 0 left: the last row takes its slot
    assert cache.keys[0][0, 0, 1:4, 0].tolist() == [9.0, 10.0, 11.0] and cache.start[0] == 1


def test_a_drained_cache_keeps_its_minimum_tensors_and_frees_what_grew_past_them():
    from tuneforge.serve.kv_cache import SlotCache

    cache = SlotCache(n_layers=1, slots=2, capacity=8)
    cache.plan_prefill([0, 1], [3, 5])
    k = torch.ones(2, 1, 5, 1)
    cache.update(k, k, 0)
    kept = cache.keys[0]
    cache.release()  # the batch drained: the next rows write into the same tensors, nothing is zeroed again
    assert cache.keys[0] is kept
    cache.plan_prefill([0], [20])  # a long prompt grows the cache past its minimum
    cache.update(torch.ones(1, 1, 20, 1), torch.ones(1, 1, 20, 1), 0)
    assert cache.keys[0].shape[2] >= 20
    cache.release()  # a long answer must not keep a large cache alive
    assert cache.keys == [None] and cache.values == [None]
    cache.plan_prefill([0], [3])
    cache.update(torch.ones(1, 1, 3, 1), torch.ones(1, 1, 3, 1), 0)
    cache.release(keep_minimum=False)  # after a failed step nothing it holds is kept
    assert cache.keys == [None]


def test_rows_after_the_batch_drained_get_the_greedy_answer_over_the_earlier_rows_columns(engine, tiny_model,
                                                                                        tokenizer):
    """The kept cache still holds the last rows' keys and values; the next rows must not see them. The second
    pair's short row sits in a slot a long row wrote, inside the columns its longer neighbour reads."""
    engine.start()
    for pair in ((3, 1), (2, 3), (0, 2)):
        answers = [Answer(), Answer()]
        engine.submit([row(tokenizer, PROMPTS[i], a, 10) for i, a in zip(pair, answers, strict=True)])
        assert [a.text for a in answers] == [reference(tiny_model, tokenizer, PROMPTS[i], 10) for i in pair]
    assert engine.stats["batches"] == 3  # each pair came to an idle engine


def test_an_idle_engine_prefills_a_burst_together_while_its_requests_keep_arriving(tiny_model, tokenizer):
    """Requests of a burst reach the engine a little apart: each one within a batch window of the one before
    keeps the window open, so all are prefilled in one forward (a window counted from the first request
    took only those within it; the rest waited for that prefill and joined after)."""
    import time

    # Gaps just over half a window: the three span more than one window, and a gap may stretch by
    # 1.15 s (a loaded CI machine) before it would close the window.
    engine = Engine(tiny_model, tokenizer, max_batch=4, max_waiting=4, batch_window_s=2.4)
    answers = [Answer() for _ in range(3)]
    engine.start()
    try:
        for i, answer in enumerate(answers):  # 2.5 s from the first to the last: more than one window
            if i:
                time.sleep(1.25)
            engine.submit([row(tokenizer, PROMPTS[i], answer, 4)])
        assert all(a.text is not None for a in answers)
        assert engine.stats["batches"] == 1 and engine.stats["max_rows_in_batch"] == 3
    finally:
        engine.stop(10)


def _burst(engine, tokenizer, n: int = 8) -> list[Answer]:
    answers = [Answer() for _ in PROMPTS]
    engine.start()
    engine.submit([row(tokenizer, p, a, n) for p, a in zip(PROMPTS, answers, strict=True)])
    return answers


def _padded_prefills(monkeypatch) -> list[int]:
    """Rows per call of the padded path (``Batch._prefill``), recorded from now on."""
    from tuneforge.serve import scheduler

    calls: list[int] = []
    prefill = scheduler.Batch._prefill
    monkeypatch.setattr(scheduler.Batch, "_prefill", lambda self, rows: (calls.append(len(rows)), prefill(self, rows)))
    return calls


def test_a_burst_on_an_idle_engine_is_one_flat_forward_with_the_greedy_answers(engine, tiny_model, tokenizer,
                                                                             monkeypatch):
    padded = _padded_prefills(monkeypatch)
    expected = [reference(tiny_model, tokenizer, p, 8) for p in PROMPTS]
    assert [a.text for a in _burst(engine, tokenizer)] == expected
    assert padded == []
    # one forward for the four prompts (no padded groups by length), then 7 decoding steps
    assert engine.stats["batches"] == 1 and engine.stats["steps"] == 7
    assert engine.stats["joined_in_step"] == 0  # nothing was running: none joined a step


def test_a_burst_over_the_token_bound_takes_several_flat_forwards(engine, tiny_model, tokenizer, monkeypatch):
    from tuneforge.serve import scheduler

    bound = max(len(tokenizer(p)["input_ids"]) for p in PROMPTS)  # the longest prompt fits, not all four
    monkeypatch.setattr(scheduler, "FLAT_TOKENS", bound)
    chunks = scheduler.Batch(engine)._flat_chunks([row(tokenizer, p, Answer(), 8) for p in PROMPTS])
    assert len(chunks) >= 2 and [len(r.prompt_ids) for c in chunks for r in c] == [
        len(tokenizer(p)["input_ids"]) for p in PROMPTS]  # in arrival order, none left out
    assert all(sum(len(r.prompt_ids) for r in c) <= bound for c in chunks)
    expected = [reference(tiny_model, tokenizer, p, 8) for p in PROMPTS]
    assert [a.text for a in _burst(engine, tokenizer)] == expected
    # the later forwards carry the earlier chunks' rows decoding their next tokens
    assert engine.stats["batches"] == len(chunks) and engine.stats["joined_in_step"] == 4 - len(chunks[0])


def test_a_prompt_longer_than_the_bound_is_prefilled_apart(engine, tiny_model, tokenizer, monkeypatch):
    from tuneforge.serve import scheduler

    padded = _padded_prefills(monkeypatch)
    monkeypatch.setattr(scheduler, "FLAT_TOKENS", len(tokenizer(PROMPTS[3])["input_ids"]) - 1)
    expected = [reference(tiny_model, tokenizer, p, 8) for p in PROMPTS]
    assert [a.text for a in _burst(engine, tokenizer)] == expected
    assert padded == [4]  # SDPA's padded path, whose kernel does not hold [tokens x tokens] scores
