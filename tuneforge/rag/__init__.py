"""tuneforge.rag: ingestion, embeddings, vector store, retrieval, answers with citations, evaluation.

Modules: ``documents`` (load files and bundled sets), ``chunking``, ``embed``, ``store`` (the
VectorStore interface and its LanceDB implementation), ``index`` (ingest/update), ``answer``
(grounded prompts and citations), ``evaluate`` (recall@k, MRR, answer accuracy), ``pipeline`` (the
pieces wired from a recipe).
"""

