"""Decoding attention in half precision: PyTorch's CPU flash kernel against two matmuls, alone and in the engine.

``tuneforge.serve.slot_attention`` sends a bfloat16/float16 decoding step of at least ``MATMUL_MIN_ROWS`` rows
through :func:`_one_token_rows` (scores, softmax, weighted values: transformers' eager attention) instead
of the SDPA kernel. This measures both choices on one thread (as ``bench.serve`` runs its servers):

- **per layer**: SmolLM2-135M's attention shapes (9 query heads over 3 key heads, head dim 64) for
  1..32 rows and a few cache widths, the keys a view of a wider cache as the engine hands them out;
- **in the engine**: decoding steps of the bundled model (``--dtype bfloat16``) at 8 to 32 rows,
  kernel and matmuls alternated step pair by step pair in one process (the bound flipped between them),
  thread CPU time, median.

    python -m bench.serve_attention            # prints; nothing is written
"""

from __future__ import annotations

import argparse
import statistics
import time

ROWS = (1, 2, 4, 8, 16, 32)
WIDTHS = (60, 92, 200)


def _best_us(fn, n: int = 300) -> float:
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n // 5):
            fn()
        best = min(best, (time.perf_counter() - t) / (n // 5))
    return 1e6 * best


def per_layer(dtype_name: str = "bfloat16") -> None:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from tuneforge.serve.slot_attention import _one_token_rows

    class Layer(torch.nn.Module):  # what transformers' SDPA attention reads from a layer
        num_key_value_groups, is_causal = 3, True

    dtype, layer = getattr(torch, dtype_name), Layer()
    print(f"per layer ({dtype_name}, 1 thread): us, SDPA kernel vs matmuls")
    for rows in ROWS:
        for width in WIDTHS:
            cache = torch.randn(2, rows, 3, 256, 64).to(dtype)
            key, value = cache[0, :, :, :width], cache[1, :, :, :width]
            query = torch.randn(rows, 9, 1, 64).to(dtype)
            mask = torch.ones(rows, 1, 1, width, dtype=torch.bool)
            kernel = _best_us(lambda q=query, k=key, v=value, m=mask: sdpa_attention_forward(
                layer, q, k, v, m, scaling=0.125))
            grouped = query.reshape(rows, 3, 3, 64)
            matmuls = _best_us(lambda q=grouped, k=key, v=value, m=mask: _one_token_rows(q, k, v, m[:, 0, 0], 0.125))
            print(f"  rows {rows:2d} width {width:3d}: kernel {kernel:7.0f}  matmuls {matmuls:7.0f}  "
                  f"x{kernel / matmuls:.2f}")


def in_engine(rounds: int = 16, row_counts: tuple[int, ...] = (8, 16, 24, 32)) -> None:
    import torch

    import tuneforge.config as C
    from bench.serve_steps import MODEL, _prompts, mid_answer_batch
    from tuneforge.serve import slot_attention
    from tuneforge.serve.engine import Engine
    from tuneforge.serve.server import load_base

    model, tok = load_base(C.ModelConfig(name=MODEL, dtype="bfloat16"))
    engine = Engine(model, tok, max_batch=32)
    engine.eos_ids = frozenset()  # rows keep decoding for the whole measurement
    prompts = _prompts(tok, 33)
    bound = slot_attention.MATMUL_MIN_ROWS
    print(f"in the engine (bf16, 1 thread): ms per decoding step, thread CPU, median of {rounds} alternated pairs")
    with torch.inference_mode():
        for rows in row_counts:
            batch = mid_answer_batch(engine, prompts, rows)  # as bench.serve_steps measures
            times: dict[str, list[float]] = {"kernel": [], "matmuls": []}
            for r in range(rounds):
                for name in ("kernel", "matmuls") if r % 2 else ("matmuls", "kernel"):
                    slot_attention.MATMUL_MIN_ROWS = 10**9 if name == "kernel" else bound
                    t = time.thread_time()
                    batch._decode()
                    batch._decode()
                    times[name].append(1e3 * (time.thread_time() - t) / 2)
            slot_attention.MATMUL_MIN_ROWS = bound
            k, m = statistics.median(times["kernel"]), statistics.median(times["matmuls"])
            print(f"  rows {rows:2d}: kernel {k:6.1f}  matmuls {m:6.1f}  x{k / m:.2f}")
            batch.reset()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Half-precision decoding attention: the CPU flash kernel vs matmuls.")
    p.add_argument("--rounds", type=int, default=16, help="alternated step pairs per row count in the engine")
    p.add_argument("--rows", type=int, nargs="+", default=[8, 16, 24, 32], help="row counts measured in the engine")
    a = p.parse_args(argv)
    import torch

    from tuneforge.models import native_bf16

    torch.set_num_threads(1)
    per_layer()
    if native_bf16():
        in_engine(a.rounds, tuple(a.rows))
    else:
        print("in the engine: not measured (this CPU has no native bfloat16; it would not be served in bf16)")


if __name__ == "__main__":
    main()
