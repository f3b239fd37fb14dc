from tuneforge.eval.results import MetricValue, ResultRow, read_results, write_results


def test_rows_merge_by_system_and_task(tmp_path):
    write_results(tmp_path, [ResultRow("base zero-shot", "sentiment", {"accuracy": MetricValue(0.5, 0.4, 0.6, 100)})])
    write_results(tmp_path, [ResultRow("tuned", "sentiment", {"accuracy": MetricValue(0.8)})])
    write_results(tmp_path, [ResultRow("tuned", "sentiment", {"accuracy": MetricValue(0.9)})])
    rows = read_results(tmp_path)
    assert [(r.system, r.metrics["accuracy"].value) for r in rows] == [("base zero-shot", 0.5), ("tuned", 0.9)]
    assert rows[0].metrics["accuracy"].n == 100
