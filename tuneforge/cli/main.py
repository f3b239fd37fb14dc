"""The `tuneforge` command: a thin layer over the Python API, one module per command group."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from tuneforge import __version__
from tuneforge.allocator import active, restart_with_allocator
from tuneforge.errors import UserError
from tuneforge.interrupt import take_back_sigint
from tuneforge.secrets import RedactingFormatter, redact_text

# Each module has register(subparsers). Order here is the order in --help.
COMMAND_MODULES = (
    "tuneforge.cli.quickstart",
    "tuneforge.cli.models",
    "tuneforge.cli.config",
    "tuneforge.cli.data",
    "tuneforge.cli.train",
    "tuneforge.cli.multitask",
    "tuneforge.cli.stages",
    "tuneforge.cli.tune",
    "tuneforge.cli.export",
    "tuneforge.cli.serve",
    "tuneforge.cli.eval",
    "tuneforge.cli.rag",
    "tuneforge.cli.ui",
)

DESCRIPTION = """\
tuneforge: the whole life of fine-tuning a language model, offline-first.

  1. prepare data        tuneforge data prepare ...
  2. baseline (0/k-shot) tuneforge eval ...
  3. fine-tune           tuneforge train RECIPE
  4. evaluate, compare   tuneforge eval / compare / report
  5. try RAG instead     tuneforge rag index|ask|eval
  6. ship                tuneforge export / serve

Start with `tuneforge quickstart` (the whole lifecycle on the bundled model, ~10 minutes on a CPU).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneforge", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tuneforge {__version__} (allocator: {active()})")
    parser.add_argument("--verbose", "-v", action="store_true", help="Show library logs and full tracebacks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command line (not a caller's main([...])): on TCMalloc where the system has it
        restart_with_allocator()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    take_back_sigint()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.INFO if args.verbose else logging.WARNING
    terminal = logging.StreamHandler()  # log lines may quote a URL with a password: redact them
    terminal.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[terminal])
    for handler in logging.getLogger().handlers:  # run log files get INFO; the terminal only warnings
        handler.setLevel(level)
    if not args.verbose:
        _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends: not an error
        sys.stderr.close()
        return 0
    except Exception:  # noqa: BLE001 - a bug or a library's own error: the traceback helps a bug report,
        # but it may quote a recipe value or a connection URL with its password (a database driver does)
        print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        return 1


def _quiet_libraries() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
