"""Fixtures for the UI tests: run folders built by hand, a live UI server, and Chromium (system package).

The browser is Debian's ``/usr/bin/chromium`` driven by Playwright; Playwright's own browser download
is never used (it cannot work offline). A missing browser fails the tests: scripts/test.sh installs it.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tuneforge import atomic

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
KEY = "test-key-0123456789"


def training_recipe(model: Path, name: str, max_steps: int, save_every: int = 2, output_dir: Path | None = None) -> str:
    """A LoRA training recipe on the tiny model that logs every step: what the launch, stop and cancel tests
    start as a real `tuneforge train` process."""
    out = f"\n  output_dir: {output_dir}" if output_dir is not None else ""
    return f"""\
model:
  name: {model}
run:
  name: {name}{out}
data:
  path: rotten-tomatoes
  template: sentiment
  max_examples: 40
train:
  method: lora
  max_steps: {max_steps}
  batch_size: 2
  max_length: 256
  eval_every: 1000
  save_every: {save_every}
  log_every: 1
eval:
  after_train: false
"""


def make_run(runs: Path, name: str, *, finished: bool = False, results: dict | None = None,
             losses: list[float] = (0.9, 0.7, 0.5)) -> Path:
    """A run folder as `tuneforge train` leaves it: recipe, manifest, metrics (and the result if finished)."""
    folder = runs / name
    (folder / "logs").mkdir(parents=True)
    atomic.write_text(folder / "recipe.yaml", "model:\n  name: tiny\ntrain:\n  method: lora\n  max_steps: 3\n")
    atomic.write_json(folder / "manifest.json", {"command": "train", "created": "2026-12-01T10:00:00"})
    start = datetime.datetime(2026, 12, 1, 10, 0).timestamp()
    rows = [{"time": start + 60.0 * (i + 1), "step": i + 1, "split": "train", "loss": v} for i, v in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "logs" / "run.log").write_text(f"INFO tuneforge: run train: {folder}\n")
    if finished:
        atomic.write_json(folder / "train_result.json", {"steps": len(losses), "method": "lora"})
    if results:
        atomic.write_json(folder / "eval" / "results.json", results)
    return folder


def hold_lock(folder: Path) -> subprocess.Popen:
    """A live process holding the run folder's lock, as a training process does."""
    code = ("import sys, time; from tuneforge import locks\n"
            "with locks.hold(sys.argv[1], 'the run folder'):\n    print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def serve_ui():
    """Start the UI on a free loopback port for (runs_dir, key); yields a function returning its URL."""
    import uvicorn

    from tuneforge.ui.app import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(runs: Path, key: str | None = KEY, indexes: list[Path] = ()) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(runs, key, indexes), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the UI server did not start"
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _no_launched_run_outlives_its_test():
    yield
    _kill_launched()


def _kill_launched() -> None:
    """Runs a test launched through the UI (each in its own session) end with it: a failed test must not
    leave a training process behind, eating the CPU of the tests after it."""
    from tuneforge.ui import launch

    for proc in list(launch._CHILDREN):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        launch._CHILDREN.remove(proc)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `apt-get install -y chromium` (scripts/test.sh does)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def login(page, url: str, key: str = KEY) -> None:
    page.goto(url + "/login")
    page.fill("#key", key)
    page.click("#login")
    page.wait_for_url(url + "/")


DOCS = [  # three real documents: Python's own reference topics (shipped with CPython)
    ("pass", "The pass statement"), ("break", "The break statement"), ("while", "The while statement"),
]


@pytest.fixture(scope="session")
def rag_index(tmp_path_factory) -> Path:
    """A small real LanceDB index (bundled MiniLM embedder) of three documents, built once per session.

    Tests that delete from it copy it first (:func:`index_copy`)."""
    from pydoc_data.topics import topics

    from tuneforge.config.rag import RagConfig
    from tuneforge.rag.pipeline import index_sources

    root = tmp_path_factory.mktemp("rag")
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"topics/{name}", "title": title, "text": topics[name]}) + "\n"
                            for name, title in DOCS))
    cfg = RagConfig(index_dir=str(root / "index"), chunk_tokens=64, chunk_overlap=16, top_k=3)
    index_sources(cfg, [str(docs)], progress=False)
    return root / "index"


def index_copy(rag_index: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(rag_index, dest)
    return dest
