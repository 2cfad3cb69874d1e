"""The ``serkd`` command line: one entry point, one verb per stage of the data flow.

A thin layer: each module parses its verbs' flags, calls the library and renders the result
(``render.py``); flags of ``train`` and ``teacher train`` are built from the config fields
(``config_args.py``). Every verb has ``--help``; bad input ends the command with one line on stderr
naming the file and the problem (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from serkd.cli.config_args import flag_message
from serkd.cli.corpus import add_corpus, add_synth
from serkd.cli.deploy import add_bench, add_export, add_predict
from serkd.cli.evaluate import add_eval
from serkd.cli.grid import add_grid
from serkd.cli.render import parse_params, print_json
from serkd.cli.report import add_report
from serkd.cli.train import add_methods, add_teacher, add_train
from serkd.config import ConfigError
from serkd.errors import SerkdError

__all__ = ["build_parser", "main", "parse_params", "print_json"]

VERBS: list[Callable] = [add_synth, add_corpus, add_train, add_teacher, add_grid, add_report, add_eval, add_methods,
                         add_export, add_predict, add_bench]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serkd", description=__doc__.splitlines()[0], formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(sub)
    return parser


def _version() -> str:
    from serkd import __version__

    return f"serkd {__version__}"


def _flags(text: str) -> str:
    """Library hints name config fields; on the command line they are flags."""
    return text.replace("skip_bad", "--skip-bad").replace("allow_leaky_teacher", "--allow-leaky-teacher") \
        .replace("allow_stale_teacher", "--allow-stale-teacher").replace("the labels option", "--labels")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="serkd: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its usage line
        return int(exc.code or 0)
    try:
        code = args.func(args)
    except ConfigError as exc:
        message = flag_message(exc, args)
        sys.stderr.write(f"serkd: error: {message if exc.source else _flags(message)}\n")
        return 2
    except SerkdError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            sys.stderr.write(f"serkd: error: {_flags(line)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("serkd: interrupted\n")
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
