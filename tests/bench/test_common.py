"""The benchmark helpers on fake numbers: tables, targets, the BENCHMARKS.md sections, percentiles."""

from __future__ import annotations

import importlib

import pytest

from bench import common


def test_every_benchmark_module_imports():
    for name in ("train", "train_vs_best", "profile_train", "generation", "rag", "serve", "serve_soak", "run_all", "data", "memory"):
        assert importlib.import_module(f"bench.{name}")


def test_table_formats_rows_in_column_order():
    text = common.table([{"b": 2.5, "a": "x"}, {"a": "y", "b": None}], ["a", "b"])
    lines = text.splitlines()
    assert lines[0] == "| a | b |"
    assert lines[2] == "| x | 2.50 |"
    assert lines[3] == "| y | - |"


def test_ratio_and_percentile():
    assert common.ratio(3.0, 2.0) == 1.5
    assert common.ratio(1.0, 0) is None
    assert common.ratio(None, 2.0) is None
    assert common.percentile([1, 2, 3, 4], 50) == 2.5
    assert common.percentile([5], 95) == 5


def test_target_line_says_met_or_missed():
    assert "**met**" in common.target_line("speed", 2.0, 1.5, unit="x")
    assert "**missed**" in common.target_line("speed", 1.0, 1.5, unit="x")
    assert "**met**" in common.target_line("latency", 10.0, 20.0, higher_is_better=False)
    assert "not measured" in common.target_line("speed", None, 1.5)


def test_write_section_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nhand-written analysis stays\n")
    fixed = {"date": "d", "cpu": "c", "cores": 2, "torch_threads": 2, "memory_gb": 1.0, "load_avg": "1/1/1", "os": "o"}
    first = common.Report("rag", "RAG", "small", tables=["| a |\n|---|\n| 1 |"], machine=fixed, versions={"x": "1"})
    common.write_section(first, path)
    other = common.Report("serve", "Serve", "small", tables=["| s |"], machine=fixed, versions={"x": "1"})
    common.write_section(other, path)
    second = common.Report("rag", "RAG", "full", tables=["| a |\n|---|\n| 2 |"], machine=fixed, versions={"x": "1"})
    common.write_section(second, path)
    text = path.read_text()
    assert "hand-written analysis stays" in text
    assert text.count("<!-- bench:rag -->") == 1
    assert "| 2 |" in text and "| 1 |" not in text
    assert "| s |" in text
    assert "--full" in text


@pytest.mark.parametrize("n", [64])
def test_matmul_peak_and_rss_are_positive(n):
    assert common.matmul_peak_gflops(n=n, seconds=0.05) > 0
    assert common.peak_rss_mb() > 0


def test_clustered_vectors_are_unit_length():
    np = pytest.importorskip("numpy")
    from bench.rag import clustered_vectors, exact_top_k

    data, queries = clustered_vectors(500, 3, dim=16, clusters=5)
    assert np.allclose(np.linalg.norm(data, axis=1), 1, atol=1e-5)
    top = exact_top_k(data, queries, 10)
    assert all(len(t) == 10 for t in top)
    # the exact top-1 is the best dot product
    assert int(top[0][0]) == int(np.argmax(data @ queries[0]))


def test_workers_report_their_allocator_and_cli_env_puts_them_on_the_commands_one():
    from tuneforge import allocator

    plain = common.run_worker("builtins:dict", {"x": 1})
    assert plain["x"] == 1 and plain["allocator"] == "system"  # glibc's malloc unless a worker's env preloads
    library = allocator.find("auto")
    assert common.cli_env() == (allocator.preload_env(library) if library else {})
    preloaded = common.run_worker("builtins:dict", {}, env=common.cli_env())
    assert preloaded["allocator"] == next(iter(allocator.available()), "system")
