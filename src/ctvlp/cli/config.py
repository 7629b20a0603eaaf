"""`ctvlp config RECIPE [--debug] [--steps N] [--set a.b=value ...] [--json]`: a recipe's resolved config.

Prints the run config (RunConfig) that `ctvlp train` runs with the same --recipe, --debug, --steps and --set:
every field with its value and its help, as YAML with the help as comments (valid YAML: save it and
read it back), or with --json as plain JSON. A field's path is what --set takes: `lr` under `optim:`
is `--set optim.lr=3e-4`.
"""

from __future__ import annotations

import argparse

from ctvlp.cli.train import add_config_args
from ctvlp.recipes import NAMES


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("config", help="print a recipe's resolved config with every field's help (what --set changes)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", choices=NAMES, help="the recipe")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="plain JSON, without the help")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from ctvlp.cli.train import resolve_config
    from ctvlp.config import to_dict, to_yaml_with_help

    cfg = resolve_config(args)
    if args.json:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    changes = (["--debug"] if args.debug else []) + ([f"--steps {args.steps}"] if args.steps is not None else []) \
        + [f"--set {item}" for item in args.overrides]
    print(f"# ctvlp train --recipe {' '.join([args.recipe, *changes])}: the resolved config; "
          "change a field with --set PATH=VALUE (e.g. optim.lr=3e-4)")
    print(to_yaml_with_help(cfg), end="")
    return 0
