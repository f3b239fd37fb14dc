"""bench.serve's clients: streamed chat requests from N threads at once, and what each level measured.

The first ``clients`` requests of a level start together (a burst: every client's first request); the
rest start as earlier ones finish. TTFT is reported over all requests (the burst included, which is
what a crowd arriving at once sees) and over the requests after each client's first ("steady": a
request joining a batch that is already decoding, as in a server under constant load).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from bench import common


def one_request(client, base: str, model: str, messages: list[dict], max_tokens: int) -> dict[str, float]:
    """One streamed chat request: TTFT, latency, completion tokens (usage if sent, else content chunks)."""
    t0 = time.perf_counter()
    first, chunks, usage, error = None, 0, None, False
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with closing(_open_stream(client, f"{base}/v1/chat/completions", body)) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("error"):
                error = True
            if data.get("usage"):
                usage = data["usage"]
            for choice in data.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - t0
    latency = time.perf_counter() - t0
    tokens = int(usage["completion_tokens"]) if usage else chunks
    return {"tokens": tokens, "latency": latency, "ttft": first if first is not None else latency, "error": error}


def _open_stream(client, url: str, body: dict):
    """A streamed POST's response, sent again once if a pooled keep-alive connection turns out closed
    before any response came (llama.cpp's server closes idle keep-alive connections after 5 s; reusing
    one gives "Server disconnected without sending a response", as with any HTTP client; nothing came
    back, so sending again is safe). Errors after the response started are not retried."""
    import httpx

    try:
        return client.send(client.build_request("POST", url, json=body), stream=True)
    except httpx.RemoteProtocolError:
        return client.send(client.build_request("POST", url, json=body), stream=True)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process, all its threads (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_level(base: str, model: str, convs: list[list[dict]], max_tokens: int, clients: int,
              pid: int | None = None) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4)
    with httpx.Client(timeout=600, limits=limits) as client:
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            res = list(pool.map(lambda c: one_request(client, base, model, c, max_tokens), convs))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    steady = [r["ttft"] for r in res[clients:]]  # pool.map starts the first `clients` at once: the burst
    tokens = sum(r["tokens"] for r in res)
    lat, ttft = [r["latency"] for r in res], [r["ttft"] for r in res]
    # one row's decoding rate: tokens after the first over the time after the first token
    ok = [r for r in res if r["tokens"] > 1]
    decode = (sum(r["tokens"] - 1 for r in ok) / sum(r["latency"] - r["ttft"] for r in ok)) if ok else None
    return {"clients": clients, "requests": len(convs), "errors": sum(r["error"] for r in res), "completion tokens": tokens, "seconds": wall,
            "tokens/s": tokens / wall, "tokens/CPU-s": tokens / cpu if cpu > 0 else None,
            "p50 latency s": common.percentile(lat, 50),
            "p95 latency s": common.percentile(lat, 95), "p50 TTFT s": common.percentile(ttft, 50),
            "p95 TTFT s": common.percentile(ttft, 95),
            "p95 TTFT s, steady": common.percentile(steady, 95) if steady else None,
            "decode tokens/s per row": decode}
