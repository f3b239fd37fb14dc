"""Serving: ``tuneforge serve`` (fp32, bf16 and int8) and llama.cpp's server at 1, 8 and 32 concurrent clients.

Each contender is a server process of its own on 127.0.0.1 (auth off: loopback only), serving the bundled
SmolLM2-135M-Instruct: tuneforge from its fp32 conversion of the bundled GGUF, from the same in bfloat16
(``--dtype bfloat16``; only where the CPU multiplies bfloat16 natively, AVX512-BF16 or AMX) and from an int8
export of it (``tuneforge.export.quantize``), llama.cpp's ``llama-server`` from the bundled GGUF itself. All servers are
started first; then, at each client count, the contenders take turns, so that the load of a shared
machine falls on all of them alike. Every contender gets the same chat requests (user turns of the
training mix, ``max_tokens`` fixed, temperature 0), streamed, from 1, 8 and 32 client threads. Per
request: time to the first content chunk (TTFT), total latency and ``usage.completion_tokens``;
throughput is the sum of completion tokens over the wall time of the list.

llama-server is a C++ binary, not a pip package (``llama-cpp-python`` compiles all of llama.cpp for its
bindings; only the server is needed): ``bench/build_llama_server.sh`` builds just that target, then
``python -m bench.serve --llama-server PATH`` (or ``LLAMA_SERVER=PATH``). Without it the report says
"not measured" and measures tuneforge alone.

The same run measures the machine's memory bandwidth (a large tensor read and a copy, torch, same
threads) and sets it against each row's decoding rate x the bytes of weights a decoding step reads (once
for all its rows), to show how close each mode is to the bandwidth limit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.data import length_mix
from bench.serve_client import run_level

MODEL = "smollm2-135m-instruct"
LEVELS = (1, 8, 32)
# Requests per level: at 8 and 32 clients every client sends the same number (2 small, 4 full), so both levels are
# the same shape of load: a burst of first requests, a steady middle, a drain as the last answers finish. (Until
# 2026-12-05 the full size sent 2 a client at 32 clients against 4 at 8: its burst and drain were half the run, and
# the engine alone, without HTTP, got 8.08x one client's tokens/s from 64 requests, 8.86x from 128, 9.02x from 256.)
SIZES = {"small": {"requests": {1: 4, 8: 16, 32: 64}, "max_tokens": 24},
         "full": {"requests": {1: 8, 8: 32, 32: 128}, "max_tokens": 64},
         "smoke": {"requests": {1: 2, 8: 8, 32: 32}, "max_tokens": 3}}  # checks the code paths only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 600, path: str = "/health") -> None:
    import httpx

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("server did not become ready")


# ---------------------------------------------------------------------------------------------- contenders


def tuneforge_cmd(model: str, port: int, *extra: str) -> list[str]:
    top = max(LEVELS)
    return [sys.executable, "-m", "tuneforge.cli.main", "serve", "--model", model, "--no-auth", "--host", "127.0.0.1",
            "--port", str(port), "--max-concurrent", str(top), "--max-queue", str(2 * top),
            "--no-fine-tuning",  # inference only; and two servers in one folder would share its state folder
            "--timeout", "900",  # the default 120 s cut every fp32 answer at 32 clients on a machine loaded 15-fold
            *extra]


def llama_server_path(given: str | None) -> Path | None:
    """llama.cpp's ``llama-server`` binary: ``--llama-server PATH``, else $LLAMA_SERVER, else on PATH."""
    import shutil

    found = given or os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
    return Path(found) if found and Path(found).is_file() else None


def llama_server_cmd(binary: Path, gguf: Path, port: int) -> list[str]:
    """The same slots as tuneforge's rows (``--parallel``, continuous batching on), the same threads."""
    import torch

    threads, slots = str(torch.get_num_threads()), max(LEVELS)
    return [str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--threads", threads,
            "--threads-batch", threads, "--parallel", str(slots), "--cont-batching", "--ctx-size", str(slots * 1024),
            "--alias", "bench", "--no-webui", "--log-disable"]


def int8_folder() -> Path:
    """An int8 export of the bundled model, written once into the tuneforge cache."""
    from tuneforge.export.quantize import MARKER, is_int8_folder, save_int8
    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.models.cache import cache_root

    out = cache_root() / "bench" / f"{MODEL}-int8"
    if not is_int8_folder(out) or "embedding_from_head" not in json.loads((out / MARKER).read_text()):  # older
        print(f"bench.serve: writing an int8 copy of {MODEL} to {out} (once)", flush=True)
        save_int8(load_model(MODEL, device="cpu"), load_tokenizer(MODEL), out)
    return out


def weights_mb(folder: Path) -> float:
    """MB of weights a decoding step reads: every tensor, except an input embedding that has a head of its
    own (a lookup reads one row of it per token)."""
    from safetensors import safe_open

    total = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            names = list(st.keys())
            own_head = any(n.startswith("lm_head.") for n in names)
            for n in names:
                if not (own_head and n.endswith("embed_tokens.weight")):
                    sl = st.get_slice(n)
                    total += _numel(sl.get_shape()) * _DTYPE_BYTES[sl.get_dtype()]
    return total / 1e6


_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I64": 8, "I32": 4}


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def start_server(cmd: list[str], ready_path: str) -> tuple[subprocess.Popen, str, str]:
    """Start one contender, wait until it answers, warm it up: (process, base URL, model id)."""
    import httpx

    port = int(cmd[cmd.index("--port") + 1])
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(base, proc, path=ready_path)
        model = httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]
    except BaseException as e:
        stop_server(proc)
        tail = Path(log.name).read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{e}; its log ({log.name}) ends: {' | '.join(tail)}") from e
    return proc, base, model


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_alternating(servers: dict[str, tuple], cfg: dict, convs: dict[int, list]) -> list[dict]:
    """Every level for every contender, the contenders alternating within each level (all servers are up;
    an idle one costs nothing), so that a change in the machine's load falls on all of them alike."""
    for name, (_, base, model) in servers.items():
        run_level(base, model, convs[1][:2], 4, 1)  # warm-up
        print(f"bench.serve: {name} warmed up", flush=True)
    rows = []
    for clients in LEVELS:
        for name, (proc, base, model) in servers.items():
            row = {"contender": name, **run_level(base, model, convs[clients], cfg["max_tokens"], clients, proc.pid)}
            print(f"bench.serve: {name}, {clients} client(s): {row['tokens/s']:.2f} tokens/s, "
                  f"p95 TTFT {row['p95 TTFT s']:.2f} s, load {common.load_average()[0]:.1f}", flush=True)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- bandwidth


def bandwidth_gbs(mb: int = 512, repeats: int = 5) -> dict[str, float]:
    """Best of ``repeats``: read (sum over a large tensor) and copy (read + write) in GB/s."""
    import torch

    a = torch.ones(mb * 2**20 // 4)
    b = torch.empty_like(a)
    read = copy = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
        read = min(read, time.perf_counter() - t0)
        t0 = time.perf_counter()
        b.copy_(a)
        copy = min(copy, time.perf_counter() - t0)
    size = a.numel() * 4
    return {"read GB/s": size / read / 1e9, "copy GB/s": 2 * size / copy / 1e9}


# ---------------------------------------------------------------------------------------------- report


def contenders(int8: Path, llama: Path | None) -> list[tuple[str, Any, str, float | None]]:
    """(name, command builder, readiness path, weights MB read per decoding step) of each contender."""
    from tuneforge.models import bundled_gguf_path, native_bf16
    from tuneforge.models.load import resolve_model

    fp32 = Path(resolve_model(MODEL))
    out = [(f"tuneforge fp32 (continuous batching, {max(LEVELS)} rows)", lambda p: tuneforge_cmd(MODEL, p),
            "/health", weights_mb(fp32))]
    if native_bf16():  # elsewhere oneDNN emulates bfloat16, slower than float32: not a mode to serve
        out.append(("tuneforge bf16 (--dtype bfloat16, native bf16 GEMM)",
                    lambda p: tuneforge_cmd(MODEL, p, "--dtype", "bfloat16"), "/health", weights_mb(fp32) / 2))
    out.append(("tuneforge int8 (int8 weights, fp16 GEMM)", lambda p: tuneforge_cmd(str(int8), p), "/health",
                weights_mb(int8)))
    if llama is None:
        return out
    gguf = bundled_gguf_path(MODEL)
    out.append((f"llama.cpp llama-server ({gguf.name}, {max(LEVELS)} slots)", lambda p: llama_server_cmd(llama, gguf, p),
                "/health", gguf.stat().st_size / 1e6))
    return out


def run(size: str, write: bool = True, llama: Path | None = None) -> common.Report:
    import torch

    cfg = SIZES[size]
    threads = torch.get_num_threads()
    report = common.Report(name="serve", title="Serving: continuous batching at 1, 8 and 32 clients, vs llama.cpp",
                           size=size)
    pool = [r["messages"][:-1] for r in length_mix(max(cfg["requests"].values()), seed=2)]
    convs = {c: pool[: cfg["requests"][c]] for c in LEVELS}
    bw = bandwidth_gbs()
    per_mb: dict[str, float | None] = {}
    servers: dict[str, tuple] = {}
    from tuneforge.models import native_bf16

    if not native_bf16():
        report.setup.append("tuneforge bf16: **not measured** (this CPU has no native bfloat16 multiply: "
                            "neither AVX512-BF16 nor AMX)")
    if llama is None:
        report.setup.append("llama.cpp's server: **not measured** (no llama-server binary: pass --llama-server "
                            "PATH or set LLAMA_SERVER; bench/build_llama_server.sh builds one)")
    try:
        for name, cmd, ready, mb in contenders(int8_folder(), llama):
            per_mb[name] = mb
            try:
                servers[name] = start_server(cmd(free_port()), ready)
            except Exception as e:  # a peer that fails to start is reported, not hidden
                print(f"bench.serve: {name} failed: {e}", flush=True)
                report.setup.append(f"{name}: failed ({type(e).__name__}: {e})")
        rows = run_alternating(servers, cfg, convs)
    finally:
        for proc, _, _ in servers.values():
            stop_server(proc)
    bw_after = bandwidth_gbs()
    read_gbs = max(bw["read GB/s"], bw_after["read GB/s"])
    by = {(r["contender"], r["clients"]): r for r in rows}
    for r in rows:
        seq = by.get((r["contender"], 1))
        r["x own 1 client"] = common.ratio(r["tokens/s"], seq["tokens/s"] if seq else None)
        r["x own 1 client (CPU)"] = common.ratio(r["tokens/CPU-s"], seq["tokens/CPU-s"] if seq else None)
        mb = per_mb.get(r["contender"])
        if mb and r["decode tokens/s per row"]:  # one decoding step reads the weights once for all its rows
            r["weights MB"] = mb
            r["bandwidth-bound steps/s"] = read_gbs * 1e3 / mb
            r["GB/s of weights read"] = r["decode tokens/s per row"] * mb / 1e3
            r["% of read bandwidth"] = 100 * r["GB/s of weights read"] / read_gbs
    report.setup = [
        f"each contender its own server process on 127.0.0.1, all started first, then at each client count the "
        f"contenders alternate; tuneforge: `tuneforge serve --max-concurrent {max(LEVELS)} --max-queue "
        f"{2 * max(LEVELS)}` on {MODEL} (fp32 conversion of the bundled GGUF, its Linear layers from oneDNN's "
        f"prepacked weights), the same with `--dtype bfloat16` (every Linear prepacked, oneDNN's native bf16 "
        f"GEMM) and on its int8 export (served by "
        f"fbgemm's float16-weight GEMM of the int8 values, activations float32); llama.cpp: `llama-server --parallel {max(LEVELS)} --cont-batching --ctx-size "
        f"{max(LEVELS) * 1024}` on the bundled GGUF itself, the same --threads as torch ({threads})",
        f"chat requests: user turns of the training mix (seed 2), max_tokens {cfg['max_tokens']}, temperature 0, "
        f"streamed; {', '.join(f'{n} requests at {c} client(s)' for c, n in cfg['requests'].items())}, the same "
        "lists for every contender",
        "tokens = usage.completion_tokens (content chunks where a server sends no usage); tokens/s over the wall "
        "time of the list, and over the CPU seconds of the server process (robust to other work sharing the cores); TTFT = time to the first content chunk; decode tokens/s per row = (tokens - 1) over "
        "(latency - TTFT)",
        f"memory bandwidth (torch, 512 MB tensor, best of 5, before / after): read {bw['read GB/s']:.1f} / "
        f"{bw_after['read GB/s']:.1f} GB/s, copy (read + write) {bw['copy GB/s']:.1f} / {bw_after['copy GB/s']:.1f} "
        f"GB/s; a decoding step reads the weights once for all its rows: bandwidth-bound steps/s = read GB/s / "
        f"weights, GB/s of weights read = a row's decode tokens/s x weights",
        *report.setup,
    ]
    cols = ["contender", "clients", "requests", "errors", "completion tokens", "seconds", "tokens/s", "x own 1 client",
            "tokens/CPU-s", "x own 1 client (CPU)",
            "p50 latency s", "p95 latency s", "p50 TTFT s", "p95 TTFT s", "p95 TTFT s, steady",
            "decode tokens/s per row"]
    report.tables.append(common.table(rows, cols))
    bound = [r for r in rows if "weights MB" in r]
    if bound:
        report.tables.append(common.table(bound, ["contender", "clients", "weights MB", "bandwidth-bound steps/s",
                                                  "decode tokens/s per row", "GB/s of weights read",
                                                  "% of read bandwidth"]))
    report.targets = targets(by)
    print("\n".join(f"- {line}" for line in report.setup))  # the bandwidth figures live here
    common.finish(report, write=write)
    return report


def targets(by: dict[tuple[str, int], dict]) -> list[str]:
    """Issue 20's figures for each tuneforge mode, and each mode's ratio to llama.cpp's server."""
    names = [name for name, clients in by if clients == 1]
    llama = next((n for n in names if n.startswith("llama.cpp")), None)

    def get(name, clients, key):
        row = by.get((name, clients))
        return row.get(key) if row else None

    out = []
    for name in (n for n in names if n.startswith("tuneforge")):
        mode = name.split()[1]  # fp32 / bf16 / int8
        for clients, goal in ((8, 4), (32, 8)):
            for key, per in (("x own 1 client", "tokens/s"), ("x own 1 client (CPU)", "tokens/CPU-s")):
                out.append(common.target_line(f"{mode}, {clients} clients vs 1 client {per}", get(name, clients, key),
                                              goal, unit="x"))
        out.append(common.target_line(f"{mode}, p95 TTFT at 8 clients / idle TTFT (p50 at 1 client)",
                                      common.ratio(get(name, 8, "p95 TTFT s"), get(name, 1, "p50 TTFT s")), 2,
                                      higher_is_better=False, unit="x"))
        steady = common.ratio(get(name, 8, "p95 TTFT s, steady"), get(name, 1, "p50 TTFT s"))
        out.append(f"{mode}, the same without the burst (requests after each client's first, joining a running "
                   f"batch): {common.fmt(steady)}x idle TTFT (not the issue's figure: shown beside it)")
        for clients in LEVELS if llama else ():
            wall = common.ratio(get(name, clients, "tokens/s"), get(llama, clients, "tokens/s"))
            cpu = common.ratio(get(name, clients, "tokens/CPU-s"), get(llama, clients, "tokens/CPU-s"))
            out.append(f"tuneforge {mode} / llama.cpp server at {clients} client(s): {common.fmt(wall)}x tokens/s, "
                       f"{common.fmt(cpu)}x tokens/CPU-s")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Serving throughput, latency and TTFT at 1, 8 and 32 clients.")
    p.add_argument("--full", action="store_true", help="more requests, longer answers")
    p.add_argument("--smoke", action="store_true", help="a few tokens per request, to check it runs (never written)")
    p.add_argument("--threads", type=int, help="threads of every server (OMP_NUM_THREADS; default: torch's). "
                   "On a machine other work shares, 1 avoids OpenMP threads spinning while descheduled")
    p.add_argument("--no-write", action="store_true", help="print the tables but leave BENCHMARKS.md alone")
    p.add_argument("--llama-server", metavar="PATH", help="llama.cpp's llama-server binary (default: $LLAMA_SERVER, "
                   "then PATH; bench/build_llama_server.sh builds one); without it llama.cpp is not measured")
    a = p.parse_args(argv)
    if a.threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the servers inherit it
        torch.set_num_threads(a.threads)
    size = "smoke" if a.smoke else "full" if a.full else "small"
    llama = llama_server_path(a.llama_server)
    if a.llama_server and llama is None:
        p.error(f"--llama-server {a.llama_server}: no such file")
    run(size, write=not a.no_write and size != "smoke", llama=llama)


if __name__ == "__main__":
    main()
