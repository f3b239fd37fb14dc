"""Prompt prefixes computed once: a prompt that starts like an earlier one (a chat template's system turn)
copies those keys and values instead of computing them, and its answer does not change."""

from __future__ import annotations

import torch

from tests.serve.test_continuous import Answer, reference, row
from tuneforge.serve.engine import BASE, Engine

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
ASK = [SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
       SYSTEM + "<|im_start|>user\nName three colours of the rainbow<|im_end|>\n",
       SYSTEM + "<|im_start|>user\nWhy do cats purr so loudly at night?<|im_end|>\n"]


def shared(tokenizer, a: str, b: str) -> int:
    x, y = tokenizer(a)["input_ids"], tokenizer(b)["input_ids"]
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


def test_later_prompts_reuse_the_shared_prefix_and_keep_the_one_at_a_time_answers(tiny_model, tokenizer):
    n = 10
    expected = [reference(tiny_model, tokenizer, p, n) for p in ASK]
    engine = Engine(tiny_model, tokenizer, max_batch=4, max_waiting=4, batch_window_s=0)
    engine.start()
    try:
        first = Answer()
        engine.submit([row(tokenizer, ASK[0], first, n)])
        assert first.text == expected[0]
        assert engine.stats["prefix_tokens_reused"] == 0  # nothing stored before the first prompt
        # two more in one prefill: different lengths after the shared part, so one is left-padded
        later = [Answer(), Answer()]
        engine.submit([row(tokenizer, p, a, n) for p, a in zip(ASK[1:], later, strict=True)])
        assert [a.text for a in later] == expected[1:]
        common = shared(tokenizer, ASK[0], ASK[1])
        assert common >= 20 and engine.stats["prefix_tokens_reused"] >= 2 * common - 2
    finally:
        engine.stop(10)


def test_a_row_joining_mid_decode_reuses_the_prefix_of_the_running_row(tiny_model, tokenizer):
    n = 12
    expected = [reference(tiny_model, tokenizer, p, n) for p in ASK[:2]]
    engine = Engine(tiny_model, tokenizer, max_batch=4, max_waiting=4, batch_window_s=0)
    answers = [Answer(), Answer()]
    answers[0].on_delta = lambda k: engine.submit([row(tokenizer, ASK[1], answers[1], n)]) if k == 3 else None
    engine.start()
    try:
        engine.submit([row(tokenizer, ASK[0], answers[0], n)])
        assert [a.text for a in answers] == expected
        assert engine.stats["joined_running"] == 1
        assert engine.stats["joined_in_step"] == 1  # its prompt rode in the running row's decoding step
        assert engine.stats["prefix_tokens_reused"] == shared(tokenizer, ASK[0], ASK[1])
    finally:
        engine.stop(10)


def test_an_adapter_never_reuses_keys_computed_by_the_base_model(tiny_model_dir, tokenizer, lora_runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def fresh():
        return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()

    adapter = lora_runs["lora-a"] / "adapter"
    n = 10
    want_base = reference(fresh(), tokenizer, ASK[0], n)
    want_lora = reference(PeftModel.from_pretrained(fresh(), str(adapter)).eval(), tokenizer, ASK[1], n)
    engine = Engine(fresh(), tokenizer, {"lora-a": adapter}, max_batch=4, max_waiting=4, batch_window_s=0)
    engine.start()
    try:
        base, lora = Answer(), Answer()
        engine.submit([row(tokenizer, ASK[0], base, n, adapter=BASE)])
        assert base.text == want_base
        engine.submit([row(tokenizer, ASK[1], lora, n, adapter="lora-a")])
        assert lora.text == want_lora
        assert engine.stats["prefix_tokens_reused"] == 0
    finally:
        engine.stop(10)


def test_the_kv_cache_plans_reused_tokens_as_context_not_queries():
    from tuneforge.serve.kv_cache import SlotCache

    cache = SlotCache(n_layers=1, slots=2, capacity=8)
    # row 0: 5 tokens, the first 3 reused (2 queries); row 1: 3 tokens, none reused (3 queries)
    positions, mask = cache.plan_prefill([0, 1], [5, 3], [3, 0])
    assert positions.tolist() == [[0, 3, 4], [0, 1, 2]]  # row 0's padding query at position 0
    assert (cache.start[0], cache.end[0]) == (1, 6) and (cache.start[1], cache.end[1]) == (3, 6)
    assert mask[0, 0, 1].tolist() == [False, True, True, True, True, False]  # sees the reused columns 1-3
    assert mask[0, 0, 0].tolist() == [True, False, False, False, False, False]  # padding: only its own column
    k = torch.arange(3.0).reshape(1, 3, 1).repeat(1, 1, 1)  # [heads, tokens, dim]
    cache.write_prefix(0, [k], [k], 3)
    assert cache.keys[0][0, 0, 1:4, 0].tolist() == [0.0, 1.0, 2.0]
    keys, _ = cache.read_prefix(0, 3)
    assert keys[0][0, :, 0].tolist() == [0.0, 1.0, 2.0]


def test_a_mixed_forward_plans_running_tokens_and_joining_prompts_as_one_flat_sequence():
    from tuneforge.serve.kv_cache import SlotCache

    cache = SlotCache(n_layers=1, slots=3, capacity=4)
    cache.plan_prefill([0], [3])  # a running row: 3 prompt tokens in columns 0-2
    # it decodes one token while a 4-token prompt joins in slot 1, its first 2 tokens reused
    positions, mask, plan = cache.plan_mixed([0], [1], [4], [2])
    assert positions.tolist() == [[3, 2, 3]]
    assert plan.running == 1 and plan.joining == ((1, 1, 3),)  # slot 1 owns tokens 1-2
    assert (cache.start[0], cache.end[0]) == (0, 4) and (cache.start[1], cache.end[1]) == (0, 4)
    t, f = True, False
    assert mask[0, 0].tolist() == [[t, t, t, t],  # each token sees its own slot's columns up to itself
                                   [t, t, t, f],
                                   [t, t, t, t]]
    new = torch.tensor([10.0, 20.0, 30.0]).reshape(1, 1, 3, 1)  # [1, heads, tokens, dim]
    keys, _ = cache.update(new, new, 0)
    assert keys.shape == (2, 1, 4, 1)  # the two slots, 4 columns each
    assert keys[0, 0, 3, 0] == 10.0 and keys[1, 0, 2:4, 0].tolist() == [20.0, 30.0]
    # the next plain decoding step continues both rows from their own columns
    positions, _ = cache.plan_decode([0, 1])
    assert positions.tolist() == [[4], [4]]


def test_slot_attention_equals_attention_over_each_tokens_own_slot():
    import torch.nn.functional as F

    from tuneforge.serve.slot_attention import PLAN, MixedPlan, slot_attention

    torch.manual_seed(0)
    q = torch.randn(1, 4, 5, 8)  # 4 heads over 2 kv heads, 5 tokens
    k, v = torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)  # 3 slots, width 5
    # tokens 0-1: running rows in slots 0 and 1; tokens 2-4: a joining row's prompt in slot 2
    slots = torch.tensor([0, 1, 2, 2, 2])
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]],
                        dtype=torch.bool)
    token = PLAN.set(MixedPlan(running=2, joining=((2, 2, 5),)))
    try:
        got, _ = slot_attention(torch.nn.Module(), q, k, v, mask[None, None], scaling=0.5)
    finally:
        PLAN.reset(token)
    for t in range(5):  # token t alone, against its own slot, by torch's SDPA
        kt = k[slots[t]].repeat_interleave(2, dim=0)[None]
        vt = v[slots[t]].repeat_interleave(2, dim=0)[None]
        want = F.scaled_dot_product_attention(q[:, :, t : t + 1], kt, vt, attn_mask=mask[t][None, None, None], scale=0.5)
        assert torch.allclose(got[0, t], want[0, :, 0], atol=1e-6)


def test_rows_of_another_adapter_joining_are_prefilled_apart_and_keep_their_answers(tiny_model_dir, tokenizer,
                                                                                     lora_runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def fresh():
        return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()

    adapters = {name: run / "adapter" for name, run in lora_runs.items()}
    n = 10
    expected = [reference(fresh(), tokenizer, ASK[0], n),
                reference(PeftModel.from_pretrained(fresh(), str(adapters["lora-a"])).eval(), tokenizer, ASK[1], n)]
    engine = Engine(fresh(), tokenizer, adapters, max_batch=4, max_waiting=4, batch_window_s=0)
    answers = [Answer(), Answer()]
    answers[0].on_delta = (lambda k: engine.submit([row(tokenizer, ASK[1], answers[1], n, adapter="lora-a")])
                           if k == 3 else None)
    engine.start()
    try:
        engine.submit([row(tokenizer, ASK[0], answers[0], n)])
        assert [a.text for a in answers] == expected
        assert engine.stats["joined_running"] == 1 and engine.stats["joined_in_step"] == 0
    finally:
        engine.stop(10)
