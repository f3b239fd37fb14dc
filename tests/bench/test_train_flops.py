"""The FLOP count behind the --vs-best ceiling lines: terms, what each contender computes, the 2x need."""

from __future__ import annotations

import pytest

from bench.train_flops import flops_terms, needed_share, per_token, utilisation_row
from bench.train_workers import flop_counts

# A tiny Llama: h=4, 2 heads of 2, 1 kv head, intermediate 8, 2 layers, vocabulary 10.
CFG = {"hidden_size": 4, "intermediate_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
       "head_dim": 2, "num_hidden_layers": 2, "vocab_size": 10}


def test_terms_by_hand():
    # per layer weights: q 4x4 + k 4x2 + v 4x2 + o 4x4 + gate 4x8 + up 4x8 + down 8x4 = 16+8+8+16+32+32+32 = 144
    # per layer r*(in+out) at r=1: 8+6+6+8+12+12+12 = 64
    t = flops_terms(CFG, r=1, ctx=3, head_fraction=0.5)
    assert t["base"] == 4 * 2 * 144
    assert t["lora"] == 6 * 2 * 64
    assert t["attention"] == 12 * 2 * 4 * 3
    assert t["lm_head"] == 4 * 10 * 4 * 0.5


def test_lm_head_counted_on_loss_positions_unless_it_runs_on_all():
    run = {"tokens": 100, "ctx_tokens": 100 * 50, "loss_tokens": 40}
    tf = per_token(CFG, 1, run, head_on_all=False)
    trl = per_token(CFG, 1, run, head_on_all=True)
    assert tf["lm_head"] == pytest.approx(0.4 * trl["lm_head"])
    assert tf["attention"] == trl["attention"] == 12 * 2 * 4 * 50


def test_share_of_the_matmul_rate():
    terms = {"base": 6e8, "lora": 0.0, "attention": 0.0, "lm_head": 0.0}
    row = utilisation_row("x", terms, {"tokens_per_s": 100, "tokens_per_cpu_s": 50}, rate=120.0, cpu_rate=60.0)
    assert row["GFLOP/s"] == pytest.approx(60.0)
    assert row["% of mm rate (wall)"] == pytest.approx(50.0)
    assert row["% of mm rate (CPU)"] == pytest.approx(50.0)


def test_share_needed_for_twice_trl():
    # tuneforge computing 90% of TRL's FLOPs, TRL at 40%: 2x needs 72%
    assert needed_share(0.9, 1.0, 40.0) == pytest.approx(72.0)


def test_flop_counts_cover_the_timed_steps_only():
    counts = [10, 20, 30]
    shapes = [(12, 5), (25, 7), (30, 9)]
    assert flop_counts(3, counts, shapes) == {"ctx_tokens": 20 * 25 + 30 * 30, "loss_tokens": 16}
