"""bench.gpu_train's arithmetic and plumbing, on the CPU: the run order, the FLOP count of full fine-tuning,
attention counted per example, and the report built from a results file."""

from __future__ import annotations

import pytest
import torch

from bench import common, gpu_train
from bench.train_flops import flops_terms, per_token
from bench.train_workers import flop_counts, squared_lengths

CFG = {"hidden_size": 4, "intermediate_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
       "head_dim": 2, "num_hidden_layers": 2, "vocab_size": 10}


def test_full_fine_tuning_counts_every_weights_gradient_and_no_lora():
    lora, full = flops_terms(CFG, 1, 3, 0.5), flops_terms(CFG, 1, 3, 0.5, method="full")
    assert full["base"] == pytest.approx(1.5 * lora["base"]) and full["lora"] == 0
    assert full["lm_head"] == pytest.approx(1.5 * lora["lm_head"]) and full["attention"] == lora["attention"]
    assert flops_terms(CFG, 1, 3, 0.5, method="qlora") == lora


def test_attention_is_counted_over_each_examples_length():
    # one packed row of examples of 3 and 2 tokens and 3 padding tokens; a second row of one 4-token example
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    assert squared_lengths(pos, mask, (2, 8)) == 9 + 4 + 16
    assert squared_lengths(None, mask, (2, 8)) == 25 + 16  # no position ids: one example per row
    counts = flop_counts(2, [5, 9], [(8, 2, 1), (8, 3, 29)])  # the second step is the timed one
    assert counts == {"ctx_tokens": 72, "loss_tokens": 3, "example_ctx_tokens": 29}
    run = {"tokens": 9, **counts}
    assert per_token(CFG, 1, run, per_example=True)["attention"] == pytest.approx(12 * 2 * 4 * 29 / 9)
    assert per_token(CFG, 1, run)["attention"] == pytest.approx(12 * 2 * 4 * 8)


def _run(model: str, label: str, method: str, tokens_per_s: float, repeat: int = 0) -> dict:
    return {"model": model, "contender": label, "method": method, "repeat": repeat, "tokens": 1000,
            "tokens_per_s": tokens_per_s, "ctx_tokens": 2048 * 1000, "example_ctx_tokens": 100 * 1000,
            "loss_tokens": 400, "gpu_peak_allocated_mb": 2048 if label.startswith("TRL") else 1024,
            "val_loss": 10.8}


def test_report_gives_ratios_to_trl_and_mfu_against_the_measured_matmul_rate():
    result = {
        "gpu": "a GPU", "machine": common.machine(), "versions": common.versions(), "ceilings": {"bf16_mm_tflops": 100.0, "copy_gbps": 1000.0},
        "settings": {"steps": 3, "rows": 8, "max_length": 2048, **gpu_train.SETTINGS},
        "varlen_check": {"loss_rel_diff": 1e-3, "grad_norm_rel_diff": 2e-3, "sdpa_fwd_bwd_ms": 50,
                         "varlen_fwd_bwd_ms": 20, "tokens": 16000, "rows": 8},
        "runs": [_run("smollm2", gpu_train.TRL_LORA, "lora", 1e5), _run("smollm2", gpu_train.TF_LORA, "lora", 3e5),
                 _run("smollm2", gpu_train.TF_LORA, "lora", 1e5, repeat=1),
                 _run("smollm2", gpu_train.TRL_LORA, "lora", 2e5, repeat=1)],
        "failed": [{"model": "gemma3", "contender": "x", "error": "exit 1"}],
    }
    rows = {r["contender"]: r for r in gpu_train.mfu_rows(result, {"smollm2": CFG})}
    tf = rows[gpu_train.TF_LORA]
    assert tf["repeats"] == 2 and tf["tokens/s"] == 2e5 and tf["x TRL"] == pytest.approx(2e5 / 1.5e5)
    assert tf["memory x TRL"] == pytest.approx(0.5)
    flops = sum(per_token(CFG, 16, result["runs"][1], per_example=True).values())
    assert tf["MFU %"] == pytest.approx(100 * flops * 2e5 / 1e12 / 100.0)
    text = gpu_train.report(result, {"smollm2": CFG}).markdown()
    assert "loss relative difference 1.0e-03" in text and "failed: gemma3 x: exit 1" in text


def test_the_repeated_pair_alternates_and_the_rest_run_once():
    order = [(r, p[0], p[1]) for r, p in gpu_train.run_order(["gemma3", "smollm2"], None, repeats=3)]
    assert order[:2] == [(0, "gemma3", gpu_train.TRL_LORA), (0, "gemma3", gpu_train.TF_LORA)]  # gemma3: no repeats
    smol = [(r, label) for r, key, label in order if key == "smollm2"]
    assert smol[:6] == [(0, gpu_train.TRL_LORA), (0, gpu_train.TF_LORA), (1, gpu_train.TF_LORA),
                        (1, gpu_train.TRL_LORA), (2, gpu_train.TRL_LORA), (2, gpu_train.TF_LORA)]
    assert len(smol) == 6 + 5 and all(r == 0 for r, _ in smol[6:])
    assert [p[1] for _, p in gpu_train.run_order(["smollm2"], ["smollm2:QLoRA"], 3)] == [
        "TRL SFTTrainer QLoRA, varlen kernel", "tuneforge QLoRA (defaults)"]


def test_only_picks_contenders_by_label_and_model():
    assert gpu_train.selected("gemma3", gpu_train.TF_LORA, ["gemma3:"])
    assert not gpu_train.selected("smollm2", gpu_train.TF_LORA, ["gemma3:"])
    assert gpu_train.selected("smollm2", "tuneforge QLoRA (defaults)", ["smollm2:QLoRA"])
    assert not gpu_train.selected("smollm2", "tuneforge full (defaults)", ["smollm2:QLoRA", "gemma3:full"])
    assert gpu_train.selected("gemma3", "anything", None)
