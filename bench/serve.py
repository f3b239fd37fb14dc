"""Serving: completion tokens/s of ``tuneforge serve`` with 8 concurrent clients vs sequential requests.

One server process (bundled SmolLM2-135M-Instruct, loopback, auth off because it binds 127.0.0.1
only), the same list of chat requests (user turns of the training mix, ``max_tokens`` fixed,
temperature 0) sent first one after another, then by 8 client threads sharing the list. Throughput is
the sum of ``usage.completion_tokens`` over the wall time of the whole list; latency per request too.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import common
from bench.data import length_mix

MODEL = "smollm2-135m-instruct"
SIZES = {"small": {"requests": 8, "max_tokens": 16}, "full": {"requests": 64, "max_tokens": 64}}
CLIENTS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tuneforge.cli.main", "serve", "--model", MODEL, "--no-auth", "--host", "127.0.0.1",
           "--port", str(port), "--max-concurrent", str(CLIENTS)]
    return subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"tuneforge serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("tuneforge serve did not become ready")


def one_request(client, base: str, model: str, messages: list[dict], max_tokens: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = client.post(f"{base}/v1/chat/completions", json={
        "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"]), time.perf_counter() - t0


def run_requests(base: str, model: str, convs: list[list[dict]], max_tokens: int, clients: int) -> dict[str, Any]:
    import httpx

    with httpx.Client(timeout=600) as client:
        t0 = time.perf_counter()
        if clients == 1:
            res = [one_request(client, base, model, c, max_tokens) for c in convs]
        else:
            with ThreadPoolExecutor(clients) as pool:
                res = list(pool.map(lambda c: one_request(client, base, model, c, max_tokens), convs))
        wall = time.perf_counter() - t0
    tokens = sum(t for t, _ in res)
    lat = [s for _, s in res]
    return {"requests": len(convs), "completion tokens": tokens, "seconds": wall, "tokens/s": tokens / wall,
            "p50 latency s": common.percentile(lat, 50), "p95 latency s": common.percentile(lat, 95)}


def run(size: str, write: bool = True) -> common.Report:
    import httpx

    cfg = SIZES[size]
    report = common.Report(name="serve", title="Serving: 8 concurrent clients vs sequential requests", size=size)
    convs = [r["messages"][:-1] for r in length_mix(cfg["requests"], seed=2)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(port)
    try:
        wait_ready(base, proc)
        model = httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]
        run_requests(base, model, convs[:2], 4, 1)  # warm-up
        seq = run_requests(base, model, convs, cfg["max_tokens"], 1)
        conc = run_requests(base, model, convs, cfg["max_tokens"], CLIENTS)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    seq.update(mode="sequential (1 client)", **{"x sequential": 1.0})
    conc.update(mode=f"{CLIENTS} concurrent clients", **{"x sequential": conc["tokens/s"] / seq["tokens/s"]})
    report.setup = [
        f"`tuneforge serve --model {MODEL} --max-concurrent {CLIENTS}` on 127.0.0.1, fp32 CPU; "
        f"{cfg['requests']} chat requests (user turns of the training mix, seed 2), max_tokens {cfg['max_tokens']}, "
        "temperature 0, the same list in both modes",
        "tokens = sum of usage.completion_tokens; seconds = wall time of the whole list",
    ]
    cols = ["mode", "requests", "completion tokens", "seconds", "tokens/s", "x sequential", "p50 latency s", "p95 latency s"]
    report.tables.append(common.table([seq, conc], cols))
    common.finish(report, write=write)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Serving throughput: 8 concurrent clients vs sequential requests.")
    p.add_argument("--full", action="store_true", help="more requests, longer answers")
    p.add_argument("--no-write", action="store_true", help="print the table but leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    run("full" if a.full else "small", write=not a.no_write)


if __name__ == "__main__":
    main()
