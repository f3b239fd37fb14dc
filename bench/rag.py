"""RAG retrieval: tuneforge's vector store at 100k chunks vs exact (brute-force numpy) search.

Vectors: 384-d (all-MiniLM-L6-v2's width), unit-normalised, drawn from a mixture of 1,000 Gaussian
clusters (synthetic: embedding 100k real chunks would take most of an hour on 2 CPU cores; clustered
rather than uniform because real sentence embeddings are clustered). Queries are held-out points from
the same mixture. Chunk texts are real Rotten Tomatoes snippets, cycled, so rows have realistic size.

Measured: indexing throughput (``store.add`` in batches of 10k, then ``store.optimize()``, which
builds the ANN index), p50/p95 latency of ``store.search(q, 10)`` one query at a time, recall@10
against exact cosine top-10 over the same vectors, and the exact search's own latency. The real
embedder's throughput on real chunk texts is reported beside it, since in practice it bounds indexing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import common

DIM = 384
SIZES = {"small": {"chunks": 100_000, "queries": 100, "embed_sample": 64},
         "full": {"chunks": 100_000, "queries": 2_000, "embed_sample": 2_048}}


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


def chunk_texts(n: int) -> list[str]:
    from bench.data import short_examples

    texts = [e["messages"][-1]["content"] for e in short_examples()]
    return [texts[i % len(texts)] for i in range(n)]


def run(size: str, write: bool = True) -> common.Report:
    import numpy as np

    from tuneforge.config.rag import RagConfig
    from tuneforge.rag.store import ChunkRow, LanceStore

    cfg = SIZES[size]
    n, nq, k = cfg["chunks"], cfg["queries"], 10
    report = common.Report(name="rag", title=f"RAG retrieval at {n // 1000}k chunks", size=size)
    data, queries = clustered_vectors(n, nq)
    texts = chunk_texts(n)
    rag = RagConfig()
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="tf-bench-rag-") as tmp:
        store = LanceStore(Path(tmp), DIM, ann_min_rows=rag.ann_min_rows, ef=rag.ann_ef, nprobes=rag.ann_nprobes)
        t0 = time.perf_counter()
        for start in range(0, n, 10_000):
            end = min(start + 10_000, n)
            rows = [ChunkRow(f"c{i}", f"d{i // 10}", i % 10, f"doc {i // 10}", "bench", texts[i], 0, len(texts[i]), "h")
                    for i in range(start, end)]
            store.add(rows, data[start:end])
        t_add = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.optimize()
        t_opt = time.perf_counter() - t0
        ann = store.has_ann_index()
        store.search(queries[0], k)  # warm-up: open files, load the index
        lat, found = [], []
        for q in queries:
            t0 = time.perf_counter()
            hits = store.search(q, k)
            lat.append((time.perf_counter() - t0) * 1000)
            found.append([int(h.chunk_id[1:]) for h in hits])
    t0 = time.perf_counter()
    truth = exact_top_k(data, queries, k)
    exact_ms = (time.perf_counter() - t0) * 1000 / nq
    recall = float(np.mean([len(set(f) & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)]))
    exact_lat = []
    for q in queries[: min(nq, 200)]:
        t0 = time.perf_counter()
        exact_top_k(data, q[None, :], k)
        exact_lat.append((time.perf_counter() - t0) * 1000)
    rows_out.append({"search": f"tuneforge LanceStore ({'IVF-HNSW-SQ' if ann else 'flat'}, nprobes {rag.ann_nprobes}, ef {rag.ann_ef})",
                     "p50 ms": common.percentile(lat, 50), "p95 ms": common.percentile(lat, 95), "recall@10": recall})
    rows_out.append({"search": "exact: numpy brute force (the reference)", "p50 ms": common.percentile(exact_lat, 50),
                     "p95 ms": common.percentile(exact_lat, 95), "recall@10": 1.0})
    index_rows = [{"step": "store.add (10k-row batches)", "seconds": t_add, "chunks/s": n / t_add},
                  {"step": "store.optimize (ANN index build)", "seconds": t_opt, "chunks/s": n / t_opt},
                  {"step": "add + optimize", "seconds": t_add + t_opt, "chunks/s": n / (t_add + t_opt)}]
    emb = embed_throughput(cfg["embed_sample"])
    if emb is not None:
        index_rows.append({"step": f"embedding real chunks (all-MiniLM-L6-v2, {cfg['embed_sample']} snippets)",
                           "seconds": emb[0], "chunks/s": emb[1]})
    report.setup = [
        f"{n:,} chunks, {DIM}-d unit vectors from a 1,000-cluster Gaussian mixture (synthetic vectors, real "
        "chunk texts); queries: held-out points of the same mixture",
        f"{nq} queries one at a time, k={k}; recall@10 against exact cosine top-10 over the same vectors; "
        f"store settings are the recipe defaults (rag.ann_min_rows {rag.ann_min_rows}, nprobes {rag.ann_nprobes}, ef {rag.ann_ef})",
        f"exact search, all queries at once: {exact_ms:.2f} ms per query",
    ]
    report.tables.append(common.table(index_rows, ["step", "seconds", "chunks/s"]))
    report.tables.append(common.table(rows_out, ["search", "p50 ms", "p95 ms", "recall@10"]))
    report.targets = [
        common.target_line("p50 query latency at 100k chunks", rows_out[0]["p50 ms"], 20, higher_is_better=False, unit=" ms"),
        common.target_line("recall@10", recall, 0.95),
    ]
    common.finish(report, write=write)
    return report


def embed_throughput(n: int) -> tuple[float, float] | None:
    """Seconds and chunks/s of the bundled embedder on ``n`` real snippets (None if it is not installed)."""
    try:
        from tuneforge.rag.embed import Embedder

        emb = Embedder()
    except Exception as exc:  # the benchmark still reports the store without the embedder
        print(f"embedder unavailable: {exc}")
        return None
    texts = chunk_texts(n)
    emb.embed(texts[:8])
    t0 = time.perf_counter()
    emb.embed(texts)
    s = time.perf_counter() - t0
    return s, n / s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="RAG store: indexing throughput, query latency and recall at 100k chunks.")
    p.add_argument("--full", action="store_true", help="more queries and a larger embedding sample")
    p.add_argument("--no-write", action="store_true", help="print the tables but leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    run("full" if a.full else "small", write=not a.no_write)


if __name__ == "__main__":
    main()
