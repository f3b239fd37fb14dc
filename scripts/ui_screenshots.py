"""Screenshots of `tuneforge ui` for the README, taken with Playwright on Debian's Chromium.

    python scripts/ui_screenshots.py --runs runs --out docs/ui

Copies the run folders in ``--runs`` that hold tuned weights (``make demo`` leaves ``runs/quickstart``, on
the bundled SmolLM2-135M-Instruct) into a scratch runs directory, so the arena's answers and the export
land in the copies, never in your runs. It builds a small RAG index there (six of Python's reference
topics, bundled MiniLM embedder), starts the UI on a free loopback port, and saves PNGs (1100x760,
under 200 KB each) of the runs list, a run page (its curve, and its evaluation: forgetting table, answers
side by side, data quality), the Launch editor with two mistakes marked, the Arena (base, tuned, base + RAG,
tuned + RAG; answers cut to ``--tokens``), the RAG page (answered by the run's base model) and the Export
page after an export. ``--pages`` takes only some of them (the others' PNGs stay as they are).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
KEY = "screenshots-key-0123456789"
TOPICS = ["pass", "break", "while", "for", "if", "return"]
BAD_RECIPE = "model:\n  name: smollm2-135m-instruct\ntrain:\n  method: lora\n  learning_rate: fast\n  epochz: 2\n"
QUESTION = "What does the pass statement do?"
LIMIT = 200_000


def copy_runs(source: Path, dest: Path) -> list[str]:
    """Copy each run with tuned weights (without checkpoints or TensorBoard logs); their names."""
    from tuneforge.runs import tuned_weights_in

    names = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and tuned_weights_in(p) is not None):
        shutil.copytree(folder, dest / folder.name, ignore=shutil.ignore_patterns(
            "checkpoints", "tensorboard", "export", "arena.jsonl"))
        names.append(folder.name)
    if not names:
        raise SystemExit(f"{source}: no finished run with tuned weights (run `make demo` first)")
    return names


def build_index(folder: Path) -> Path:
    from pydoc_data.topics import topics

    from tuneforge.config.rag import RagConfig
    from tuneforge.rag.pipeline import index_sources

    docs = folder / "topics.jsonl"
    docs.write_text("".join(json.dumps({"id": f"pydoc-topics/{t}", "text": topics[t]}) + "\n" for t in TOPICS))
    index_sources(RagConfig(index_dir=str(folder / "rag-index")), [str(docs)], progress=False)
    return folder / "rag-index"


def serve(runs: Path, index: Path) -> str:
    import uvicorn

    from tuneforge.ui.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(runs, KEY, [index]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def take(page, out: Path, name: str) -> None:
    path = out / f"{name}.png"
    page.screenshot(path=str(path))
    size = path.stat().st_size
    print(f"{path}  {size / 1000:.0f} KB", flush=True)
    if size > LIMIT:
        raise SystemExit(f"{path} is {size} bytes, over {LIMIT}: use a smaller viewport")


PAGES = ("runs", "run", "run-eval", "launch", "arena", "rag", "export")


def shoot(url: str, run: str, out: Path, pages: tuple[str, ...] = PAGES) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_context(viewport={"width": 1100, "height": 760}).new_page()
        page.set_default_timeout(600_000)
        page.goto(url + "/login")
        page.fill("#key", KEY)
        page.click("#login")
        page.wait_for_url(url + "/")
        if "runs" in pages:
            take(page, out, "runs")
        if "run" in pages or "run-eval" in pages:
            page.goto(f"{url}/runs/{run}")
            page.wait_for_function("Number(document.querySelector('#chart').dataset.points || 0) > 0")
            if "run" in pages:
                take(page, out, "run")
            if "run-eval" in pages:
                # From the "Forgetting" heading: the table, answers side by side, the data quality below.
                page.evaluate("document.querySelector('#forgetting').previousElementSibling.previousElementSibling"
                              ".scrollIntoView()")
                take(page, out, "run-eval")
        if "launch" in pages:
            page.goto(url + "/launch")
            page.fill("#recipe", BAD_RECIPE)
            page.wait_for_function("document.querySelector('#live-problems').dataset.count === '2'")
            take(page, out, "launch")
        if "arena" in pages:
            page.goto(f"{url}/arena?run={run}")
            page.fill("#prompt", QUESTION)
            page.click("#ask")
            for system in ("base", "tuned", "rag", "tuned_rag"):
                page.wait_for_function(f"document.querySelector('#answer-{system}').dataset.done !== '0'")
                if page.get_attribute(f"#answer-{system}", "data-done") != "1":
                    raise SystemExit(f"arena {system}: {page.inner_text(f'#answer-{system}')}")
            take(page, out, "arena")
        if "rag" in pages:
            page.goto(url + "/rag")
            page.fill("#question", QUESTION)  # answered by the run's base model (the RAG page's default)
            page.click("#ask")
            page.wait_for_selector("#sources")
            take(page, out, "rag")
        if "export" in pages:
            page.goto(f"{url}/export?run={run}")
            page.click("#export")
            page.wait_for_selector("#sizes")
            take(page, out, "export")
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs", help="Runs directory holding a finished run (default ./runs).")
    parser.add_argument("--run", help="The run to show (default: the first with tuned weights).")
    parser.add_argument("--out", default=str(ROOT / "docs" / "ui"), help="Where the PNGs go (default docs/ui).")
    parser.add_argument("--tokens", type=int, default=32, help="Arena answer length (default 32: quick on a CPU).")
    parser.add_argument("--pages", default=",".join(PAGES), help=f"Which PNGs to take (default all: {','.join(PAGES)}).")
    args = parser.parse_args()
    from tuneforge.ui import arena

    arena.MAX_NEW_TOKENS = args.tokens
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tf-ui-shots-") as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        names = copy_runs(Path(args.runs), runs)
        run = args.run or names[0]
        url = serve(runs, build_index(Path(tmp)))
        pages = tuple(p for p in args.pages.split(",") if p)
        unknown = set(pages) - set(PAGES)
        if unknown:
            raise SystemExit(f"--pages: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PAGES)}")
        shoot(url, run, out, pages)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
