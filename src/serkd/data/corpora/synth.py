"""The synthetic corpus written by ``serkd synth``: ``ROOT/manifest.csv`` + ``ROOT/synth.json``."""

from __future__ import annotations

from pathlib import Path

from serkd.data.corpora import register
from serkd.data.corpora.csv_corpus import build, read_rows
from serkd.data.manifest import Manifest
from serkd.errors import SerkdError
from serkd.io import read_json


@register("synth")
def load(root: Path, **_: object) -> Manifest:
    root = Path(root)
    meta_path, table = root / "synth.json", root / "manifest.csv"
    if not meta_path.is_file() or not table.is_file():
        raise SerkdError(f"{root}: not a synthetic corpus (no synth.json/manifest.csv; make one with `serkd synth`)")
    manifest = build(table, read_rows(table), "synth", labels=read_json(meta_path)["labels"])
    return manifest
