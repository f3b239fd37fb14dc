"""Where a tuneforge LoRA training step spends its time: torch profiler over real steps.

Uses tuneforge's own pieces (LoRA wrapping, tokenisation, packing, the loss) on the benchmark's data,
runs a warm-up step, then profiles ``--steps`` optimizer steps and prints the operators by self CPU
time and the share that goes to matrix multiplication (the part the matmul peak measures).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::baddbmm")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Profile tuneforge LoRA training steps on the benchmark data.")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rows", type=int, default=2, help="packed rows per step")
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.data import write_splits
    from bench.train import MODEL, SETTINGS
    from tuneforge.config import load_recipe
    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.train.data import tokenize_file
    from tuneforge.train.methods import apply_method
    from tuneforge.train.packing import collate, make_rows
    from tuneforge.train.steps import loss_sum

    if a.threads:
        torch.set_num_threads(a.threads)
    recipe = load_recipe(None, {"train.max_length": SETTINGS["max_length"]})
    tok = load_tokenizer(MODEL)
    model = apply_method(load_model(MODEL, is_trainable=True), recipe.train, tok)
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        train_file, _ = write_splits(Path(tmp), 64, 1)
        examples = tokenize_file(tok, train_file, SETTINGS["max_length"])
    rows = make_rows(examples, SETTINGS["max_length"], packing=True)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    def step(i: int) -> int:
        b = collate(examples, rows[(i * a.rows) % len(rows):][: a.rows], tok.pad_token_id)
        loss = loss_sum(model, b) / max(b.n_target, 1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return b.n_tokens

    step(0)
    t0 = time.perf_counter()
    tokens = 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(1, a.steps + 1):
            tokens += step(i)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    print(f"{tokens} tokens in {wall:.1f} s ({tokens / wall:.0f} tokens/s under the profiler); "
          f"matmul ops {100 * mm / max(total, 1):.1f}% of self CPU time")


if __name__ == "__main__":
    main()
