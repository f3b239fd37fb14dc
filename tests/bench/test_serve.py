"""bench.serve's llama.cpp contender and its report lines (no server started), and bench.serve_steps' burst timing."""

from __future__ import annotations

from pathlib import Path

from bench import serve


def test_llama_server_gets_one_slot_per_client_continuous_batching_and_the_same_gguf(tmp_path):
    binary, gguf = tmp_path / "llama-server", tmp_path / "m.gguf"
    cmd = serve.llama_server_cmd(binary, gguf, 8123)
    assert cmd[0] == str(binary) and cmd[cmd.index("--model") + 1] == str(gguf)
    assert cmd[cmd.index("--parallel") + 1] == str(max(serve.LEVELS)) and "--cont-batching" in cmd
    assert cmd[cmd.index("--port") + 1] == "8123" and cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_the_binary_comes_from_the_flag_then_the_environment_and_a_missing_one_is_none(tmp_path, monkeypatch):
    real = tmp_path / "llama-server"
    real.write_text("")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("LLAMA_SERVER", raising=False)
    assert serve.llama_server_path(None) is None
    monkeypatch.setenv("LLAMA_SERVER", str(real))
    assert serve.llama_server_path(None) == real
    assert serve.llama_server_path(str(tmp_path / "nope")) is None
    assert serve.llama_server_path(str(real)) == Path(real)


def test_targets_cover_int8_and_the_ratio_to_llama_cpp():
    def row(tps, cpu, x=1.0, ttft=1.0):
        return {"tokens/s": tps, "tokens/CPU-s": cpu, "x own 1 client": x, "x own 1 client (CPU)": x,
                "p50 TTFT s": ttft, "p95 TTFT s": ttft, "p95 TTFT s, steady": ttft / 2}

    by = {("tuneforge int8 (dynamic)", 1): row(1, 1), ("tuneforge int8 (dynamic)", 8): row(5, 4, x=5, ttft=3),
          ("llama.cpp llama-server", 1): row(2, 2), ("llama.cpp llama-server", 8): row(10, 8)}
    lines = serve.targets(by)
    assert "int8, 8 clients vs 1 client tokens/s: target >= 4x, measured 5x -> **met**" in lines
    assert "int8, p95 TTFT at 8 clients / idle TTFT (p50 at 1 client): target <= 2x, measured 3.00x -> **missed**" in lines
    assert any(line.startswith("int8, the same without the burst") and ": 1.50x idle TTFT" in line for line in lines)
    assert "tuneforge int8 / llama.cpp server at 8 client(s): 0.5x tokens/s, 0.5x tokens/CPU-s" in lines


def test_serve_steps_times_a_burst_both_ways_the_scheduler_can(tiny_model_dir):
    from bench.serve_steps import burst_costs, serving_engine

    (row,) = burst_costs(serving_engine(str(tiny_model_dir)), sizes=(3,), rounds=1)
    assert row["burst"] == 3 and row["padded ms"] > 0 and row["flat ms"] > 0
    assert row["flat x padded"] == row["padded ms"] / row["flat ms"]
    assert 0 < row["scheduler: median first token ms"] <= row["scheduler: last first token ms"]
