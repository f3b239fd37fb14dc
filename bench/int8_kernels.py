"""Which int8 matmul pays on this CPU: the kernel `tuneforge serve` uses for int8 exports, measured
against fp32 and against PyTorch's dynamic int8 Linear (fbgemm/x86), at the rows a serving step has.

    python -m bench.int8_kernels            # SmolLM2-135M's shapes (576 -> 1536 MLP, 576 -> 576 attention)

Prints, per shape and rows per step, milliseconds per matmul and each int8 kernel's speed relative to
fp32 (above 1: faster), measured in the same run; plus the largest output error relative to the
largest fp32 output. Nothing is written: copy the table into BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import time
import warnings


def _ms(fn, seconds: float) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(3):  # warm-up: packing, allocator, thread pool
            fn()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            fn()
            n += 1
    return (time.perf_counter() - start) / n * 1e3


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quantized engine "
          f"{torch.backends.quantized.engine}")
    print("| shape | rows | fp32 ms | int8pack ms (x fp32) | dynamic int8 ms (x fp32) | max rel. error int8pack / dynamic |")
    print("|---|---|---|---|---|---|")
    for k, n in ((576, 1536), (576, 576)):
        lin = torch.nn.Linear(k, n, bias=False)
        w = lin.weight.detach()
        scale = w.abs().amax(1) / 127
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
        for m in args.rows:
            x = torch.randn(m, k)
            fp = _ms(lambda x=x, lin=lin: lin(x), args.seconds)
            pack = _ms(lambda x=x, q=q, s=scale: torch._weight_int8pack_mm(x, q, s), args.seconds)
            dy = _ms(lambda x=x, dyn=dyn: dyn(x), args.seconds)
            with torch.inference_mode():
                ref = lin(x)
                top = ref.abs().max()
                e_pack = ((torch._weight_int8pack_mm(x, q, scale) - ref).abs().max() / top).item()
                e_dyn = ((dyn(x) - ref).abs().max() / top).item()
            print(f"| {k}->{n} | {m} | {fp:.3f} | {pack:.3f} ({fp / pack:.2f}x) | {dy:.3f} ({fp / dy:.2f}x) "
                  f"| {e_pack:.1e} / {e_dyn:.1e} |")


if __name__ == "__main__":
    main()
