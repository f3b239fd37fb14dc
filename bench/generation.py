"""Evaluation generation: tuneforge's batched generation vs the transformers pipeline, one prompt at a time.

Same model object (bundled SmolLM2-135M-Instruct, fp32), same prompts (the user turns of the training
benchmark's length mix), same ``max_new_tokens``, greedy decoding on both sides. Generated tokens are
counted the same way for both (the answer text re-tokenised), and tokens/s is that count over the
wall time of generating all prompts. A short warm-up runs before either side is timed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench import common
from bench.data import length_mix

MODEL = "smollm2-135m-instruct"
SIZES = {"small": {"prompts": 16, "max_new_tokens": 32, "batch_size": 16},
         "full": {"prompts": 64, "max_new_tokens": 64, "batch_size": 16}}


def count_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def pipeline_one_by_one(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    out = []
    for conv in conversations:
        res = pipe(conv, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False,
                   temperature=None, top_p=None, top_k=None)
        gen = res[0]["generated_text"]
        out.append((gen if isinstance(gen, str) else gen[-1]["content"]).strip())
    return out


def run(size: str, write: bool = True) -> common.Report:
    import torch

    from tuneforge.eval.generation import generate_batch
    from tuneforge.models import load_model, load_tokenizer

    cfg = SIZES[size]
    report = common.Report(name="generation", title="Evaluation generation: batched vs one-by-one pipeline", size=size)
    tokenizer = load_tokenizer(MODEL)
    model = load_model(MODEL)
    convs = [r["messages"][:-1] for r in length_mix(cfg["prompts"], seed=1)]
    n_new = cfg["max_new_tokens"]
    with torch.inference_mode():  # warm-up: thread pool, allocator, both code paths
        pipeline_one_by_one(model, tokenizer, convs[:1], 4)
        generate_batch(model, tokenizer, convs[:2], max_new_tokens=4, batch_size=2, progress=False)

    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    pipe_out = pipeline_one_by_one(model, tokenizer, convs, n_new)
    t_pipe = time.perf_counter() - t0
    t0 = time.perf_counter()
    tf_out = generate_batch(model, tokenizer, convs, max_new_tokens=n_new, batch_size=cfg["batch_size"], progress=False)
    t_tf = time.perf_counter() - t0
    n_pipe, n_tf = count_tokens(tokenizer, pipe_out), count_tokens(tokenizer, tf_out)
    results.append({"contender": "transformers pipeline, one prompt at a time", "prompts": len(convs),
                    "generated tokens": n_pipe, "seconds": t_pipe, "tokens/s": n_pipe / t_pipe, "x pipeline": 1.0})
    results.append({"contender": f"tuneforge generate_batch (batch {cfg['batch_size']})", "prompts": len(convs),
                    "generated tokens": n_tf, "seconds": t_tf, "tokens/s": n_tf / t_tf,
                    "x pipeline": (n_tf / t_tf) / (n_pipe / t_pipe)})
    same = sum(a == b for a, b in zip(pipe_out, tf_out, strict=True))
    report.setup = [
        f"{len(convs)} prompts (user turns of the training mix, seed 1), max_new_tokens {n_new}, greedy, fp32, "
        "same model object for both",
        "tokens = answer text re-tokenised (same counter for both); seconds = wall time over all prompts",
        f"identical answers: {same}/{len(convs)} (batched fp32 with left padding can differ in the last bits)",
    ]
    cols = ["contender", "prompts", "generated tokens", "seconds", "tokens/s", "x pipeline"]
    report.tables.append(common.table(results, cols))
    report.targets = [common.target_line("batched generation vs one-by-one pipeline", results[1]["x pipeline"], 3, unit="x")]
    common.finish(report, write=write)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Evaluation generation throughput: batched vs one prompt at a time.")
    p.add_argument("--full", action="store_true", help="more prompts and longer answers")
    p.add_argument("--no-write", action="store_true", help="print the table but leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    run("full" if a.full else "small", write=not a.no_write)


if __name__ == "__main__":
    main()
