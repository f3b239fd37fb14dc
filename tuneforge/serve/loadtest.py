"""Measure a running server's throughput: N concurrent clients vs the same requests one at a time.

Used by the benchmark suite and by hand::

    python -m tuneforge.serve.loadtest --url http://127.0.0.1:8000 --model smollm2-135m-instruct --clients 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Give three tips for writing clear emails.",
    "What is the difference between a list and a tuple in Python?",
    "Summarise the plot of a heist film in one paragraph.",
    "Name four planets and one fact about each.",
    "How do vaccines train the immune system?",
    "Write a haiku about autumn rain.",
    "Why do we need sleep?",
]


def _one(url: str, key: str, model: str, prompt: str, max_tokens: int) -> int:
    from openai import OpenAI

    client = OpenAI(base_url=url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=600)
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=max_tokens, temperature=0)
    return r.usage.completion_tokens


def measure(url: str, key: str, model: str, clients: int = 8, max_tokens: int = 64) -> dict:
    """Same ``clients`` requests sent sequentially, then all at once; completion tokens per second of each."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
    start = time.perf_counter()
    seq_tokens = sum(_one(url, key, model, p, max_tokens) for p in prompts)
    seq_s = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        conc_tokens = sum(pool.map(lambda p: _one(url, key, model, p, max_tokens), prompts))
    conc_s = time.perf_counter() - start
    return {
        "clients": clients, "max_tokens": max_tokens,
        "sequential": {"seconds": round(seq_s, 3), "tokens": seq_tokens, "tokens_per_s": round(seq_tokens / seq_s, 2)},
        "concurrent": {"seconds": round(conc_s, 3), "tokens": conc_tokens, "tokens_per_s": round(conc_tokens / conc_s, 2)},
        "speedup": round((conc_tokens / conc_s) / (seq_tokens / seq_s), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, help="Model id as listed by /v1/models.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--api-key-env", default="TUNEFORGE_API_KEY")
    args = parser.parse_args()
    key = os.environ.get(args.api_key_env, "none")
    print(json.dumps(measure(args.url, key, args.model, args.clients, args.max_tokens), indent=2))


if __name__ == "__main__":
    main()
