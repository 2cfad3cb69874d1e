"""Flags built from config fields, and configs built from flags + an optional YAML file.

Every field of a config dataclass becomes ``--field-name`` (or the flag :data:`FLAG_NAMES` gives it)
with the field's help and default shown; ``--config FILE`` reads a YAML file first and flags given on
the command line override it; ``--print-config`` prints the resolved YAML and exits. ``serkd teacher
train`` takes the fields of every registered teacher kind (each kind's own are marked with its name).
Errors from the library name config fields; :func:`flag_message` says them with the flag the user typed.

Flag names and argparse actions live here, never in the library: a field is ``--field-name``; a bool
that defaults to off is a switch, one left at None ("the recipe's value") gets ``--x/--no-x``, one that
defaults to on gets the flag that turns it off (:data:`OFF_FLAGS`, else ``--no-x``).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from serkd.cli.render import parse_params
from serkd.config import ConfigError, TeacherConfig
from serkd.errors import SerkdError

# fields whose flag is not --field-name (repeatable KEY=VALUE options read better in the singular)
FLAG_NAMES = {"corpus_options": "--corpus-option", "student_params": "--student-param",
              "method_params": "--method-param"}
# bools that default to on: the flag that turns each off, and its help (what the flag does)
OFF_FLAGS = {
    "freeze_feature_encoder": ("--train-feature-encoder",
                               "fine-tune the CNN feature encoder too (default: it stays frozen)"),
    "bf16": ("--no-bf16", "no bf16 autocast on CUDA: float32 throughout (default: bf16 on CUDA)"),
}
# closed lists (checked by argparse); methods and students are checked by the library (a student may be any
# timm name), their choices shown in the help only
STRICT_CHOICES = ("corpus", "features", "select", "feature_dtype", "recipe", "schedule")
# field name -> flag, filled as parsers are built (for messages)
FLAGS: dict[str, str] = {}
# convenience flags that fill one key of corpus_options
CORPUS_OPTION_FLAGS = {"labels": "--labels", "speakers_per_fold": "--speakers-per-fold"}


def flag_of(f: dataclasses.Field) -> str:
    return OFF_FLAGS[f.name][0] if f.name in OFF_FLAGS else FLAG_NAMES.get(f.name) or "--" + f.name.replace("_", "-")


def _variants(cls) -> dict[str, type]:
    """The concrete config classes a command builds: the teacher kinds' for TeacherConfig, else ``cls``."""
    return TeacherConfig.kind_configs() if cls is TeacherConfig else {"": cls}


def config_fields(cls) -> list[tuple[dataclasses.Field, type, dict[str, typing.Any]]]:
    """Each field of ``cls`` (for TeacherConfig: of every kind, once) with its type and its default per kind."""
    seen: dict[str, tuple[dataclasses.Field, type, dict]] = {}
    seen.update({f.name: None for f in dataclasses.fields(cls)})  # the shared fields first (model among them)
    for kind, variant in _variants(cls).items():
        hints = typing.get_type_hints(variant)
        for f in dataclasses.fields(variant):
            if seen.get(f.name) is None:
                seen[f.name] = (f, hints[f.name], {})
            seen[f.name][2][kind] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return list(seen.values())


def _shown_default(defaults: dict[str, typing.Any], recipe: bool) -> str:
    if recipe:
        return " (default: the recipe's)"
    shown = {kind: ("on" if v else "off") if isinstance(v, bool) else v for kind, v in defaults.items()}
    values = set(map(repr, shown.values()))
    if len(values) == 1:
        value = next(iter(shown.values()))
        return "" if value in (None, "", {}) else f" (default: {value})"
    return " (default: " + ", ".join(f"{v} {kind}" for kind, v in shown.items() if v not in (None, "")) + ")"


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                         title: str | None = None) -> None:
    """One flag per field of ``cls`` (defaults suppressed, so only given flags reach the namespace)."""
    parser.add_argument("--config", type=Path, metavar="FILE.yaml",
                        help="read the config from a YAML file (flags given here override it)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    group = parser.add_argument_group(title) if title else parser
    kinds = list(_variants(cls))
    for f, hint, defaults in config_fields(cls):
        if f.name in skip:
            continue
        flag = flag_of(f)
        FLAGS[f.name] = flag
        # a field only some teacher kinds have is marked with their names
        only = f"[{', '.join(defaults)}] " if len(kinds) > 1 and len(defaults) < len(kinds) else ""
        help_text = only + f.metadata.get("help", "")
        base = _base_type(hint)
        common = {"dest": f.name, "default": argparse.SUPPRESS}
        default = next(iter(defaults.values()))
        if base is dict:
            group.add_argument(flag, action="append", metavar="KEY=VALUE", help=help_text, **common)
        elif base is bool and f.name in OFF_FLAGS:
            group.add_argument(flag, action="store_false", help=only + OFF_FLAGS[f.name][1], **common)
        elif base is bool:
            action = "store_true" if default is False else argparse.BooleanOptionalAction
            shown = _shown_default(defaults, default is None and f.name in getattr(cls, "RECIPE_FIELDS", ()))
            group.add_argument(flag, action=action, help=help_text + shown, **common)
        else:
            choices = f.metadata.get("choices")
            listed = list(choices()) if choices else None
            strict = f.name in STRICT_CHOICES
            shown = help_text + (f" {{{','.join(listed)}}}" if listed and not strict else "")
            shown += _shown_default(defaults, f.name in getattr(cls, "RECIPE_FIELDS", ()))
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
    """The config: ``--config FILE``'s values, then the flags given, then ``forced`` values; the defaults of
    the class (for TeacherConfig: of the kind the model names) fill the rest."""
    from serkd.io import read_yaml

    values = read_yaml(args.config, "config") if getattr(args, "config", None) else {}
    if not isinstance(values, dict):
        raise SerkdError(f"{args.config}: expected a mapping of field: value")
    values = dict(values)
    given: set[str] = set()
    for f, _, _ in config_fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if f.name in ("method_params", "student_params", "corpus_options"):
            value = {**(values.get(f.name) or {}), **parse_params(value, flag_of(f))}
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


def resolved_yaml(config) -> str:
    """The config as it runs: values a preset fills in (the recipe's), and beside a field left at None
    that stands for a derived value (``length``: the corpus' seed length) that value as a comment, so the
    YAML read back is the same config (same hash: its finished folds are reused)."""
    text = config.resolved().to_yaml()
    derived = config.derived_values()
    lines = [line + f"  # resolved: {derived[line.split(':')[0]]}" if line.split(":")[0] in derived
             and line.endswith(": null") else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def check_print_config(config, args) -> bool:
    """``--print-config``: print the resolved YAML; True when the command should stop there."""
    if getattr(args, "print_config", False):
        import sys

        sys.stdout.write(resolved_yaml(config))
        return True
    return False


def require(value, what: str) -> None:
    if not value:
        raise SerkdError(what)
