"""A real tuneforge server (uvicorn on 127.0.0.1, a free port) around the tiny model and two LoRA runs."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.export.helpers import make_lora_run

API_KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    url: str
    served: object
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_server(model_dir: Path, adapters: dict[str, str] | None = None, api_key: str | None = API_KEY,
                 **serve: object) -> Running:
    """Build the app exactly as `tuneforge serve` does and run uvicorn in a background thread."""
    import httpx
    import uvicorn

    from tuneforge.config.recipe import ModelConfig
    from tuneforge.config.serve import ServeConfig
    from tuneforge.serve.server import build, uvicorn_config

    cfg = ServeConfig(port=free_port(), adapters=adapters or {}, served_name="tiny", **serve)
    served = build(ModelConfig(name=str(model_dir), device="cpu"), cfg, api_key)
    server = uvicorn.Server(uvicorn_config(served, cfg, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{cfg.port}"
    for _ in range(200):  # bounded: at most ~20 s
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Running(url, served, server, thread)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.should_exit = True
    raise RuntimeError("server did not start")


def build_started(model_dir: Path, api_key: str | None = API_KEY, **serve: object):
    """The app as `tuneforge serve` builds it, engine started, for in-process requests (tests.serve.asgi).

    Stop it with ``served.engine.stop()``.
    """
    from tuneforge.config.recipe import ModelConfig
    from tuneforge.config.serve import ServeConfig
    from tuneforge.serve.server import build

    cfg = ServeConfig(served_name="tiny", **serve)
    served = build(ModelConfig(name=str(model_dir), device="cpu"), cfg, api_key)
    served.engine.start()
    return served


@pytest.fixture(scope="session")
def lora_runs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-runs")
    return {name: make_lora_run(root / name, tiny_model_dir, seed=seed)
            for name, seed in (("lora-a", 1), ("lora-b", 2))}


@pytest.fixture(scope="module")
def server(tiny_model_dir, lora_runs):
    running = start_server(tiny_model_dir, {n: str(p / "adapter") for n, p in lora_runs.items()})
    yield running
    running.stop()


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
