"""`tuneforge rag index|ask|delete|list|eval`: retrieval-augmented generation from the command line."""

from __future__ import annotations

import argparse
import sys

from tuneforge.cli.common import add_recipe_args, flag, recipe_from_args

DESCRIPTION = """\
Retrieval-augmented generation: index documents into a persistent vector store (LanceDB, on disk,
no server), then answer questions grounded in the retrieved chunks, with citations. Documents can be
updated (re-index a changed file) and deleted; the index survives restarts.
"""

EPILOG = """\
examples:
  tuneforge rag index pydoc-topics                  # Python's own reference docs (bundled)
  tuneforge rag index docs/ notes.md pages.jsonl    # your files: .txt .md .rst .html .jsonl
  tuneforge rag ask "What does the pass statement do?"
  tuneforge rag ask "..." --adapter runs/lora/adapter   # answer with a tuned model
  tuneforge rag delete pydoc-topics/pass            # by id, file path, folder, or prefix/*
  tuneforge rag eval --adapter runs/lora/adapter    # recall@k, MRR, answer accuracy -> tuneforge compare
"""


def _index_args(p: argparse.ArgumentParser) -> None:
    flag(p, "--index-dir", "rag.index_dir", help="Folder of the vector store.")
    flag(p, "--embedding-model", "rag.embedding_model", help="Bundled embedder or local sentence-transformers folder.")


def register(sub: argparse._SubParsersAction) -> None:
    rag = sub.add_parser(
        "rag", help="Retrieval-augmented generation: index, ask with citations, delete, evaluate.",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub = rag.add_subparsers(dest="rag_command", metavar="ACTION")
    rag.set_defaults(func=lambda args: (rag.print_help(), 2)[1])

    p = rsub.add_parser(
        "index", help="Add or update documents (unchanged ones are skipped).",
        description="Chunk, embed and store documents. A document already indexed under the same id is "
        "replaced when its text changed and skipped otherwise.",
        epilog="examples:\n  tuneforge rag index pydoc-topics\n  tuneforge rag index docs/ --chunk-tokens 128",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", help="Files, folders, or a bundled set (pydoc-topics).")
    add_recipe_args(p)
    _index_args(p)
    flag(p, "--chunk-tokens", "rag.chunk_tokens", type=int, help="Chunk size in embedder tokens.")
    flag(p, "--chunk-overlap", "rag.chunk_overlap", type=int, help="Tokens shared by consecutive chunks.")
    flag(p, "--batch-size", "rag.embedding_batch_size", type=int, help="Chunks per embedding batch.")
    flag(p, "--prune", "rag.prune", action="store_const", const=True,
         help="Also delete indexed documents of these folders/files that no longer exist.")
    p.set_defaults(func=cmd_index)

    a = rsub.add_parser(
        "ask", help="Answer a question from the index, citing sources.",
        description="Retrieve the top-k chunks, put them in a grounded prompt, answer with the base model "
        "(or --adapter), and list the sources with the ones the answer cites.",
        epilog="examples:\n  tuneforge rag ask 'Which exception does a bare raise give with no active exception?'\n"
        "  tuneforge rag ask 'How is -1**2 evaluated?' --retrieval-only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("question", help="The question.")
    add_recipe_args(a)
    _index_args(a)
    flag(a, "--top-k", "rag.top_k", type=int, help="Chunks retrieved.")
    flag(a, "--max-new-tokens", "rag.max_new_tokens", type=int, help="Answer length limit.")
    a.add_argument("--retrieval-only", action="store_true", help="Only show the retrieved sources (no model).")
    a.set_defaults(func=cmd_ask)

    d = rsub.add_parser(
        "delete", help="Remove documents from the index, for good.",
        description="Delete documents and all their chunks; they are never retrieved again, and old table "
        "versions holding them are removed from disk.",
        epilog="examples:\n  tuneforge rag delete pydoc-topics/pass\n  tuneforge rag delete docs/old.md\n"
        "  tuneforge rag delete 'pydoc-topics/*'\n  tuneforge rag delete --all               # empty the index",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("docs", nargs="*", help="Document ids, file paths, folders, or id prefixes ending in *.")
    d.add_argument("--all", "--yes", dest="all", action="store_true",
                   help="Delete every document (needed whenever the deletion would empty the index).")
    add_recipe_args(d)
    _index_args(d)
    d.set_defaults(func=cmd_delete)

    ls = rsub.add_parser("list", help="List indexed documents.", description="List the documents in the index.")
    add_recipe_args(ls)
    _index_args(ls)
    ls.set_defaults(func=cmd_list)

    e = rsub.add_parser(
        "eval", help="Retrieval recall@k and MRR, answer accuracy; rows for `tuneforge compare`.",
        description="Evaluate RAG on QA pairs with known gold passages (bundled: pydoc-topics). Writes "
        "'base + RAG' (and with --adapter 'tuned + RAG') rows to <run>/eval/results.json.",
        epilog="examples:\n  tuneforge rag eval\n  tuneforge rag eval --adapter runs/lora/adapter --max-questions 10\n"
        "  tuneforge rag eval --retrieval-only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(e)
    _index_args(e)
    flag(e, "--qa", "rag.qa_file", help="Bundled QA set (pydoc-topics) or a JSONL file.")
    flag(e, "--top-k", "rag.top_k", type=int, help="Chunks given to the model.")
    flag(e, "--max-questions", "rag.max_questions", type=int, help="Evaluate at most this many questions.")
    flag(e, "--max-new-tokens", "rag.max_new_tokens", type=int, help="Answer length limit.")
    flag(e, "--batch-size", "rag.batch_size", type=int, help="Questions per generation batch.")
    flag(e, "--retrieval-only", "rag.answer_mode", action="store_const", const="retrieval-only",
         help="Skip answer generation.")
    e.set_defaults(func=cmd_eval)


def cmd_index(args: argparse.Namespace) -> int:
    from tuneforge.rag.pipeline import index_sources

    recipe = recipe_from_args(args)
    report = index_sources(recipe.rag, args.sources)
    print(report.summary())
    print(f"index: {recipe.rag.index_dir}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from tuneforge.rag.pipeline import ask

    recipe = recipe_from_args(args)
    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = ask(recipe, args.question, generate=not args.retrieval_only, on_token=show)
    if not args.retrieval_only:
        print("\n" if result.answer else "(the model gave an empty answer)\n")
    print("retrieved:" if args.retrieval_only else "sources:")
    for i, hit in enumerate(result.hits, 1):
        mark = "  (cited)" if i in result.cited else ""
        print(f"  [{i}] {hit.doc_id}  {hit.title}  score {hit.score:.3f}{mark}")
    if not args.retrieval_only and not result.cited:
        print("  (the answer cites none of them explicitly)")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from tuneforge.errors import UserError
    from tuneforge.rag.pipeline import delete_sources

    if not args.docs and not args.all:
        raise UserError("name the documents to delete (ids, files, folders, prefix/*), or --all for every one")
    recipe = recipe_from_args(args)
    removed = delete_sources(recipe.rag, args.docs, everything=args.all)
    for doc_id, n in removed.items():
        print(f"deleted {doc_id} ({n} chunks)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tuneforge.rag.store import open_store

    recipe = recipe_from_args(args)
    store = open_store(recipe.rag)
    docs = store.documents()
    for doc_id in sorted(docs):
        info = docs[doc_id]
        print(f"{doc_id}\t{info.chunks} chunks\t{info.title}")
    print(f"{len(docs)} documents, {store.count()} chunks in {recipe.rag.index_dir}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tuneforge.rag.evaluate import load_qa
    from tuneforge.rag.pipeline import evaluate_rag
    from tuneforge.runs import create_run

    recipe = recipe_from_args(args)
    load_qa(recipe.rag.qa_file)  # a malformed QA file is reported before a run folder is made
    with create_run(recipe, "rag-eval") as run:
        summary = evaluate_rag(recipe, run)
    for system, metrics in summary.items():
        shown = "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        print(f"{system}: {shown}")
    print(f"results: {run.path / 'eval' / 'results.json'}")
    return 0
