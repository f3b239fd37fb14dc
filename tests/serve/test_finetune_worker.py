"""Cancel stops a fine-tuning worker with SIGINT even when the server runs with SIGINT ignored."""

from __future__ import annotations

import signal
import time

from tests.ui.conftest import training_recipe
from tuneforge.serve.finetune import worker
from tuneforge.ui.catalog import read_metrics


def test_cancel_interrupts_a_worker_whose_server_ignores_sigint(tmp_path, tiny_model_dir):
    recipe = tmp_path / "job.yaml"
    recipe.write_text(training_recipe(tiny_model_dir, "job", 5000, output_dir=tmp_path / "runs"))
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup tuneforge serve &`
    try:
        w = worker.start("job", recipe, tmp_path, resume=False)
    finally:
        signal.signal(signal.SIGINT, before)
    try:
        deadline = time.monotonic() + 300
        while not any(r.get("split") == "train" for r in read_metrics(tmp_path / "runs" / "job")):
            assert w.exit_code is None, (tmp_path / worker.LOG_NAME).read_text()
            assert time.monotonic() < deadline, "the worker logged no training step"
            time.sleep(0.2)
        w.cancel()
        w.process.wait(timeout=120)
    finally:
        w.kill()
    assert w.exit_code == 130, (tmp_path / worker.LOG_NAME).read_text()[-2000:]  # the CLI's Ctrl-C exit
