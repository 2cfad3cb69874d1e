"""Flags built from config fields, and configs built from flags + an optional YAML file.

Every field of a config dataclass becomes ``--field-name`` (or the flag its metadata names) with the
field's help and default shown; ``--config FILE`` reads a YAML file first and flags given on the
command line override it; ``--print-config`` prints the resolved YAML and exits. Errors from the
library name config fields; :func:`flag_message` says them with the flag the user typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from serkd.cli.render import parse_params
from serkd.config import ConfigError
from serkd.errors import SerkdError

# field name -> flag, filled as parsers are built (for messages)
FLAGS: dict[str, str] = {}
# convenience flags that fill one key of corpus_options
CORPUS_OPTION_FLAGS = {"labels": "--labels", "speakers_per_fold": "--speakers-per-fold"}


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                         title: str | None = None) -> None:
    """One flag per field of ``cls`` (defaults suppressed, so only given flags reach the namespace)."""
    parser.add_argument("--config", type=Path, metavar="FILE.yaml",
                        help="read the config from a YAML file (flags given here override it)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title) if title else parser
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = flag_of(f)
        FLAGS[f.name] = flag
        meta = f.metadata
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = meta.get("help", "")
        base = _base_type(hints[f.name])
        common = {"dest": f.name, "default": argparse.SUPPRESS}
        if base is dict:
            group.add_argument(flag, action="append", metavar=meta.get("metavar") or "KEY=VALUE",
                               help=f"{help_text}", **common)
        elif base is bool:
            action = meta.get("action") or "store_true"
            shown = f"{help_text} (default: {'the recipe' if default is None else 'on' if default else 'off'})"
            group.add_argument(flag, action=action, help=shown, **common)
        else:
            choices = meta.get("choices")
            listed = list(choices()) if choices else None
            # corpus and features are closed lists; methods and students are checked by the library
            # (a student may be any timm name), their choices shown in the help only
            strict = f.name in ("corpus", "features", "select", "feature_dtype", "recipe", "schedule")
            shown = help_text + (f" {{{','.join(listed)}}}" if listed and not strict else "")
            shown += f" (default: {default})" if default not in (None, "") else ""
            shown += " (default: the recipe's)" if f.name in getattr(cls, "RECIPE_FIELDS", ()) else ""
            group.add_argument(flag, type=_cast(base), choices=listed if strict else None, help=shown, **common)
    if "corpus_options" not in skip:
        group.add_argument("--labels", dest="corpus_labels", default=argparse.SUPPRESS, metavar="A,B,...",
                           help="csv corpus: comma-separated class names fixing their order and ids")
        group.add_argument("--speakers-per-fold", dest="corpus_speakers_per_fold", type=int, metavar="N",
                           default=argparse.SUPPRESS, help="csv corpus without a fold column (default: 1)")


def _base_type(hint):
    args = typing.get_args(hint)
    return next((a for a in args if a is not type(None)), hint) if args else hint


def _cast(base):
    if base is int:
        return int
    if base is float:
        return float
    return str


def config_from_args(cls, args: argparse.Namespace, **forced):
    """The config: defaults, then ``--config FILE``, then the flags given, then ``forced`` values."""
    base = cls.from_yaml(args.config) if getattr(args, "config", None) else cls()
    values = base.to_dict()
    given: set[str] = set()
    for f in dataclasses.fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if f.name in ("method_params", "student_params", "corpus_options"):
            value = {**values.get(f.name, {}), **parse_params(value, flag_of(f))}
        values[f.name] = value
        given.add(f.name)
    if hasattr(args, "corpus_labels") or hasattr(args, "corpus_speakers_per_fold"):
        options = dict(values.get("corpus_options") or {})
        if hasattr(args, "corpus_labels"):
            options["labels"] = [s.strip() for s in args.corpus_labels.split(",") if s.strip()]
        if hasattr(args, "corpus_speakers_per_fold"):
            options["speakers_per_fold"] = args.corpus_speakers_per_fold
        values["corpus_options"] = options
        given.add("corpus_options")
    values.update(forced)
    args._given_fields = given
    args._config_file = str(args.config) if getattr(args, "config", None) else None
    return cls.from_dict(values)


def flag_message(exc: ConfigError, args: argparse.Namespace | None) -> str:
    """A library ConfigError in the words of the command line: the flag, or the config file and field."""
    if exc.source:
        return str(exc)
    given = getattr(args, "_given_fields", set()) if args is not None else set()
    config_file = getattr(args, "_config_file", None) if args is not None else None
    if config_file and exc.field not in given:
        return f"{config_file}: {exc.field}: {exc.problem}"
    flag = FLAGS.get(exc.field)
    return f"{flag}: {exc.problem}" if flag else str(exc)


def check_print_config(config, args) -> bool:
    """``--print-config``: print the resolved YAML; True when the command should stop there."""
    if getattr(args, "print_config", False):
        import sys

        sys.stdout.write(config.to_yaml())
        return True
    return False


def require(value, what: str) -> None:
    if not value:
        raise SerkdError(what)
