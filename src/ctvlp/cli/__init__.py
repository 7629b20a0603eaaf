"""The `ctvlp` command. Each subcommand lives in its own module `ctvlp.cli.<name>` with

    def register(subparsers) -> argparse.ArgumentParser   # adds its parser, sets func=run
    def run(args) -> int                                   # exit code

Heavy imports (torch, numpy, pandas) happen inside `run`, and the choices a parser offers come from
registries that import none of them (`ctvlp.recipes.NAMES`, `ctvlp.eval.names`,
`ctvlp.data.labels.PROTOCOLS`), so that `ctvlp --help` and `ctvlp COMMAND --help` answer at once.
A usage error (a bad value, a missing argument) and a :class:`ctvlp.errors.CtvlpError` both become
one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ctvlp import __version__
from ctvlp.errors import CtvlpError

SUBCOMMANDS: tuple[str, ...] = ("info", "manifest", "synth", "prepare", "train", "config", "eval", "demo",
                               "compare", "zeroshot", "segment", "generate", "export", "embed", "index",
                               "retrieve")

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, `ctvlp CMD: error: ...`, as a CtvlpError's
    are (argparse's own message names the valid choices of a bad value); subcommands inherit it."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ctvlp", description="Vision-language pre-training on 3D CT.")
    parser.add_argument("--version", action="version", version=f"ctvlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"ctvlp.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help / --version (0), or a usage error already printed (2)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except CtvlpError as err:
        print(f"ctvlp {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ctvlp {args.command}: interrupted", file=sys.stderr)
        return 130
