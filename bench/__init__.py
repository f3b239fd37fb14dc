"""Benchmarks: tuneforge against the tools users would otherwise pick (see BENCHMARKS.md)."""
