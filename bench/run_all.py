"""Run every benchmark (small sizes unless --full) and write their sections of BENCHMARKS.md.

Each benchmark is independent and measures its own ratios side by side; one that fails (say, a
stage not installed) is reported and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import traceback

BENCHMARKS = ("train", "generation", "rag", "serve")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="All tuneforge benchmarks; results go to BENCHMARKS.md.",
                                epilog="example: python -m bench.run_all --only generation rag")
    p.add_argument("--full", action="store_true", help="the large sizes (hours on 2 cores)")
    p.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these benchmarks")
    p.add_argument("--no-write", action="store_true", help="print tables but leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    failed = []
    for name in a.only or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        try:
            module.run("full" if a.full else "small", write=not a.no_write)
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
