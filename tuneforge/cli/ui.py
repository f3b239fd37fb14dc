"""`tuneforge ui`: runs, live curves, launch/stop/resume, arena, RAG and export in a browser (over tuneforge.ui)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="Browser UI: runs, live loss curves, launch/stop/resume, arena, RAG indexes, export.",
        description="A local web app over the runs directory: the runs list (status from the run folder and "
        "process liveness), a page per run with live progress and loss curves, the verdict, metrics, log tail "
        "and resolved recipe, a Launch page that validates a pasted recipe and starts it as its own "
        "process, an Arena (base, tuned, base + RAG), a RAG page per --index and an Export page. Binds 127.0.0.1 and asks for the API key ($TUNEFORGE_API_KEY or --api-key-file).",
        epilog="examples:\n"
        "  export TUNEFORGE_API_KEY=$(openssl rand -hex 32)\n"
        "  tuneforge ui                      # http://127.0.0.1:8765, runs from ./runs\n"
        "  tuneforge ui --runs /data/runs --port 9000\n"
        "  tuneforge ui --index runs/rag-index   # RAG page + base + RAG in the arena (repeatable)\n"
        "  tuneforge ui --no-auth            # loopback only, for a machine of your own",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", default="runs", help="The runs directory (default ./runs).")
    p.add_argument("--index", action="append", default=[], metavar="DIR",
                   help="A RAG index folder (from `tuneforge rag index`) the UI may read and delete from; repeatable. "
                   "The UI touches no other index.")
    p.add_argument("--host", default="127.0.0.1", help="Bind address (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765).")
    p.add_argument("--api-key-file", help="File holding the API key (instead of $TUNEFORGE_API_KEY).")
    p.add_argument("--no-auth", action="store_true", help="No login. Refused unless the host is a loopback address.")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneforge.config.serve import ServeConfig
    from tuneforge.errors import UserError
    from tuneforge.rag.store import read_meta
    from tuneforge.serve.security import resolve_api_key
    from tuneforge.ui.app import create_app

    key = resolve_api_key(ServeConfig().api_key_env, args.api_key_file, args.no_auth, args.host)
    for folder in args.index:
        if read_meta(folder) is None:
            raise UserError(f"--index {folder}: no RAG index here; build one with `tuneforge rag index DOCS "
                            f"--index-dir {folder}`")
    app = create_app(args.runs, key, args.index)
    print(f"tuneforge ui: http://{args.host}:{args.port}/  runs: {args.runs}  "
          f"indexes: {', '.join(args.index) or 'none'}  auth: {'API key' if key else 'OFF (loopback only)'}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
