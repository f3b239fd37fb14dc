"""Soak test of ``tuneforge serve``: many mixed requests plus clients that hang up abruptly.

    python -m bench.serve_soak                         # tiny random model (seconds to build)
    python -m bench.serve_soak --model smollm2-135m-instruct

It builds a model folder (the tiny random Llama with the bundled tokenizer, unless ``--model``) and two
small LoRA adapters with random weights, starts ``tuneforge serve`` itself on 127.0.0.1 (a free port,
an API key, default caps: max_concurrent 8 + max_queue 32 rows), then, at the same time:

- ``--requests`` chat requests from ``--concurrency`` client threads, alternating streaming and not,
  rotating over the base model and both adapters, greedy and sampled;
- ``--disconnects`` raw-socket clients, spread over the run, that send a request and reset the
  connection (RST) before the answer, after the response headers, after the first streamed chunk, or
  in the middle of a JSON answer's generation.

Then one normal request, sent once (no retry): it must succeed at once. The printed counts separate
successes, 429s (documented: "server busy, retry") and anything else (errors). Exit status 1 when
there is any error or the last request fails. Loopback only; every loop and wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.serve import free_port, wait_ready

BUNDLED = "smollm2-135m-instruct"
ADAPTERS = ("lora-a", "lora-b")
BASE_ID = "base"
HANG_UPS = ("before-answer", "after-headers", "after-first-chunk", "during-json")
QUESTIONS = [
    "Name three colours.", "What is two plus two?", "Write a haiku about rain.", "Give me a tip for sleep.",
    "Why is the sky blue?", "Say hello in French.", "List four planets.", "What is a tuple in Python?",
]


# ------------------------------------------------------------------------------------------- setup


def build_models(folder: Path, model: str | None) -> tuple[str, dict[str, Path]]:
    """The base model to serve (a tiny random one unless ``model``) and two random LoRA adapters for it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.models.tiny import save_tiny_model, tiny_model

    if model is None:
        tokenizer = load_tokenizer(BUNDLED)
        base_name = str(save_tiny_model(folder / "tiny-model", tokenizer))
    else:
        base_name = model
    adapters = {}
    for seed, name in enumerate(ADAPTERS, start=1):
        base = tiny_model(tokenizer, seed=0) if model is None else load_model(model, device="cpu")
        peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for pname, param in peft_model.named_parameters():
                if "lora_B" in pname:  # B starts at zero (a no-op adapter): make each adapter change answers
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
        peft_model.save_pretrained(folder / name)
        adapters[name] = folder / name
    return base_name, adapters


def start_server(base_name: str, adapters: dict[str, Path], port: int, key: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tuneforge.cli.main", "serve", "--model", base_name, "--host", "127.0.0.1",
           "--port", str(port), "--served-name", BASE_ID]
    for name, path in adapters.items():
        cmd += ["--adapter-dir", f"{name}={path}"]
    env = {**os.environ, "TUNEFORGE_API_KEY": key, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


# ----------------------------------------------------------------------------------------- clients


def chat_body(i: int, max_tokens: int, stream: bool) -> dict[str, Any]:
    model = (BASE_ID, *ADAPTERS)[i % 3]
    body: dict[str, Any] = {"model": model, "stream": stream, "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
    if i % 4 == 3:  # some sampled, reproducibly
        body.update(temperature=0.8, seed=i)
    else:
        body["temperature"] = 0
    return body


def one_request(client, base: str, key: str, i: int, max_tokens: int) -> str:
    """Outcome of chat request ``i``: "ok", "429", or a short description of what went wrong."""
    import httpx

    stream = i % 2 == 1
    body = chat_body(i, max_tokens, stream)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        if not stream:
            r = client.post(f"{base}/v1/chat/completions", json=body, headers=headers)
            if r.status_code != 200:
                return "429" if r.status_code == 429 else f"HTTP {r.status_code}"
            data = r.json()
            ok = data["choices"][0]["message"]["content"] is not None and data["usage"]["completion_tokens"] >= 1
            return "ok" if ok else "bad JSON answer"
        with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                r.read()
                return "429" if r.status_code == 429 else f"HTTP {r.status_code}"
            lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
        if not lines or lines[-1] != "data: [DONE]":
            return "stream without [DONE]"
        if any('"error"' in ln for ln in lines):
            return "in-band stream error"
        return "ok"
    except httpx.HTTPError as exc:
        return f"client error {type(exc).__name__}"


def vanish(port: int, key: str, i: int, how: str) -> str:
    """A client that sends a request and resets the connection (no FIN, an RST) at stage ``how``."""
    stream = how != "during-json"
    body = json.dumps(chat_body(i, 200, stream)).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    needle = {"before-answer": None, "after-headers": b"\r\n\r\n", "after-first-chunk": b"data:",
              "during-json": None}[how]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(head + body)
            if how == "during-json":
                time.sleep(0.05)  # the server has started on it
            seen = b""
            for _ in range(1000):  # bounded (and each recv by the socket timeout)
                if needle is None or needle in seen:
                    break
                data = s.recv(4096)
                if not data:
                    break
                seen += data
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return how
    except OSError as exc:
        return f"client error {type(exc).__name__}"


# --------------------------------------------------------------------------------------------- run


def soak(base: str, port: int, key: str, requests: int, concurrency: int, disconnects: int,
         max_tokens: int, seed: int) -> dict[str, Any]:
    import httpx

    rng = random.Random(seed)
    token_caps = [rng.randint(max(1, max_tokens // 4), max_tokens) for _ in range(requests)]
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=300)
        return local.client

    done = 0
    progress = threading.Condition()

    def request(i: int) -> str:
        nonlocal done
        outcome = one_request(client(), base, key, i, token_caps[i])
        with progress:
            done += 1
            progress.notify_all()
        return outcome

    def paced_vanish(j: int) -> str:
        """Disconnect j waits for its share of the requests to be done, so hang-ups span the whole run."""
        with progress:
            progress.wait_for(lambda: done >= j * requests // max(1, disconnects), timeout=1800)
        return vanish(port, key, requests + j, HANG_UPS[j % len(HANG_UPS)])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool, ThreadPoolExecutor(4) as rude:
        gone = [rude.submit(paced_vanish, j) for j in range(disconnects)]
        results = list(pool.map(request, range(requests)))
        vanished = [f.result() for f in gone]
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    final = one_request(httpx.Client(timeout=120), base, key, 0, 8)  # sent once: no retry
    final_s = time.perf_counter() - t1
    outcomes = Counter(results)
    return {
        "requests": requests, "concurrency": concurrency, "seconds": round(seconds, 1),
        "ok": outcomes.pop("ok", 0), "429": outcomes.pop("429", 0), "errors": dict(outcomes),
        "streaming": sum(1 for i in range(requests) if i % 2), "models": dict(Counter(
            chat_body(i, 1, False)["model"] for i in range(requests))),
        "disconnects": dict(Counter(vanished)), "final request": final, "final request seconds": round(final_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"serve this model (e.g. {BUNDLED}) instead of the tiny random one")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--disconnects", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=16, help="largest max_tokens of a request")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="tuneforge-soak-") as tmp:
        folder = Path(tmp)
        base_name, adapters = build_models(folder, a.model)
        port, key = free_port(), secrets.token_hex(16)
        base = f"http://127.0.0.1:{port}"
        log = folder / "server.log"
        proc = start_server(base_name, adapters, port, key, log)
        try:
            wait_ready(base, proc)
            report = soak(base, port, key, a.requests, a.concurrency, a.disconnects, a.max_tokens, a.seed)
        finally:
            proc.terminate()  # SIGTERM: uvicorn's graceful shutdown
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        server_log = log.read_text(errors="replace")
    report["server log tracebacks"] = server_log.count("Traceback")
    report["server log errors"] = sum(1 for ln in server_log.splitlines() if ln.startswith(("ERROR", "CRITICAL")))
    report["server shut down cleanly"] = "Application shutdown complete" in server_log
    print(json.dumps(report, indent=2))
    failed = (report["errors"] or report["final request"] != "ok" or report["server log tracebacks"]
              or report["server log errors"] or not report["server shut down cleanly"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
