"""Every ``serkd report`` option on every kind of result serkd writes, each produced here for real (tiny):
a student run with its final model, CNN / WavLM / eGeMAPS teacher stores, ``serkd teacher eval --json`` and
``serkd eval --json`` rows, and a grid's results.db holding an eGeMAPS teacher (the history without epochs
that once crashed ``--plots``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import run_cli

from serkd.io import read_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN = ["--corpus", "synth", "--folds", "0,1", "--epochs", "1", "--length", "8000", "--threads", "1"]
KINDS = ("student", "cnn-teacher", "wavlm-teacher", "egemaps-teacher", "teacher-eval", "cross-corpus", "grid-db")


def _cli(argv: list, capsys=None) -> str:
    """stdout of a successful serkd command (capsys in tests; a plain redirect in the module fixture)."""
    if capsys is not None:
        code, out, err = run_cli(argv, capsys)
    else:
        from contextlib import redirect_stderr, redirect_stdout

        from serkd.cli import main

        with redirect_stdout(io.StringIO()) as stdout, redirect_stderr(io.StringIO()) as stderr:
            code = main([str(a) for a in argv])
        out, err = stdout.getvalue(), stderr.getvalue()
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def results(tiny_synth, tmp_path_factory) -> dict[str, list[Path]]:
    """One path (or more) per kind of result."""
    capsys = None
    root = tmp_path_factory.mktemp("kinds")
    corpus = ["--root", str(tiny_synth)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SERKD_CACHE", str(root / "cache"))
        _cli(["train", *TRAIN, *corpus, "--student", "lightsernet", "--method", "ce", "--final",
              "--out", root / "ce"], capsys)
        _cli(["teacher", "train", *TRAIN, *corpus, "--model", "lightsernet", "--out", root / "cnn"], capsys)
        from serkd.models.wavlm_teacher import write_tiny

        tiny = write_tiny(root / "tiny-wavlm")
        _cli(["teacher", "train", *TRAIN, *corpus, "--model", tiny, "--batch-size", "4", "--out", root / "wavlm"],
             capsys)
        kinds = {"student": [root / "ce"], "cnn-teacher": [root / "cnn"], "wavlm-teacher": [root / "wavlm"]}
        (root / "teacher-eval.json").write_text(_cli(["teacher", "eval", root / "cnn", "--json"], capsys))
        (root / "cross-corpus.json").write_text(_cli(["eval", root / "ce", "--corpus", "synth", *corpus, "--json"],
                                                     capsys))
        kinds["teacher-eval"] = [root / "teacher-eval.json"]
        kinds["cross-corpus"] = [root / "cross-corpus.json"]
        try:
            import opensmile  # noqa: F401

            _cli(["teacher", "train", "--model", "egemaps", "--corpus", "synth", *corpus, "--folds", "0,1",
                  "--c-grid", "0.1,1", "--out", root / "egemaps"], capsys)
            kinds["egemaps-teacher"] = [root / "egemaps"]
        except ImportError:
            pass
    kinds["grid-db"] = [_grid_db(root / "grid", [*kinds.get("egemaps-teacher", kinds["cnn-teacher"]), root / "ce"])]
    return kinds


def _grid_db(out: Path, runs: list[Path]) -> Path:
    """A grid's results.db holding these runs' folds, stored as the grid driver stores its units."""
    from serkd.experiments.store import ResultsStore
    from serkd.experiments.units import Outcome, Unit

    with ResultsStore(out / "results.db") as store:
        for run in runs:
            config = read_json(run / "run.json")["config"]
            for file in sorted(run.glob("*/results.json")):
                result = read_json(file)
                kind = "teacher" if result.get("role") == "teacher" else "student"
                unit = Unit(f"{run.name}-{file.parent.name}", kind, "teacher" if kind == "teacher" else run.name,
                            file.parent.name, {**config, "folds": file.parent.name}, result.get("data_hash") or "")
                store.record(unit, Outcome(unit.key, "done", result=result, seconds=1.0))
    return out / "results.db"


@pytest.mark.parametrize("kind", [*KINDS, "all"])
def test_every_option_works_on_every_kind_of_result(kind, results, tmp_path, capsys):
    if kind not in results and kind != "all":
        pytest.skip(f"{kind}: not produced here (opensmile missing)")
    paths = [p for ps in results.values() for p in ps] if kind == "all" else results[kind]
    out = _cli(["report", *paths], capsys)
    assert "mean ± std" in out and "WA / UA" in out
    assert "per fold" in _cli(["report", *paths, "--folds"], capsys)
    assert "macro-F1" in _cli(["report", *paths, "--per-class"], capsys)
    report = json.loads(_cli(["report", *paths, "--json"], capsys))
    assert report["rows"] and report["summary"] and all(r["status"] != "unreadable" for r in report["runs"])
    assert all(0 <= s["ua_mean"] <= 1 and s["n"] >= 1 for s in report["summary"])
    md = _cli(["report", *paths, "--format", "md", "--per-class"], capsys)
    assert md.startswith("### ") and "| student | features |" in md and "macro-F1" in md
    latex = _cli(["report", *paths, "--format", "latex"], capsys)
    assert latex.count(r"\begin{tabular}") >= 1 and latex.count(r"\begin{tabular}") == latex.count(r"\end{tabular}")
    rows = list(csv.DictReader(io.StringIO(_cli(["report", *paths, "--format", "csv", "--per-class"], capsys))))
    summary = [r for r in rows if r["table"] == "summary"]
    assert len(summary) == len(report["summary"]) and all(0 <= float(r["ua_mean"]) <= 1 for r in summary)
    plots = tmp_path / "plots"
    _cli(["report", *paths, "--plots", plots, "--plot", tmp_path / "one.png"], capsys)
    assert (tmp_path / "one.png").stat().st_size > 5000
    assert list(plots.glob("bars_*.png")) and list(plots.glob("confusion_*.png"))
    curves = kind in ("student", "cnn-teacher", "wavlm-teacher", "grid-db", "all")  # per-epoch histories
    assert bool(list(plots.glob("curves_*.png"))) == curves
    assert bool(list((plots / "tensorboard").rglob("events.out.tfevents.*"))) == curves


def test_the_kinds_read_as_what_they_are(results, capsys):
    report = json.loads(_cli(["report", *[p for ps in results.values() for p in ps], "--json"], capsys))
    roles = {(s["role"], s.get("model")) for s in report["summary"]}
    assert ("teacher", None) in roles and ("student", None) in roles
    assert {("student", "fold"), ("student", "final")} <= roles  # cross-corpus: fold models and the final one
    cross = [r for r in report["rows"] if "cross-corpus" in r["marks"]]
    assert {r["fold"] for r in cross} == {"spk00", "spk01", "final"}
    if "egemaps-teacher" in results:
        egemaps = [r for r in report["rows"] if r["student"] == "egemaps+logreg"]
        assert egemaps and all("C" in h and "epoch" not in h for r in egemaps for h in r.get("history") or [{"C": 1}])
