"""What a new user hit (issue 19): eval label maps, eval on a grid folder, in-domain UA in the eval table,
whole sentences in ``serkd methods``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from corpus_builders import write_csv

from serkd.data.corpora import load_corpus


@pytest.fixture(scope="module")
def grid_out(tiny_synth, tmp_path_factory, one_torch_thread) -> Path:
    """A finished two-unit grid (ce on mel and on MFCC; 2 folds, 1 epoch, 0.5 s crops), no teacher."""
    from serkd.cli import main

    tmp = tmp_path_factory.mktemp("xgrid")
    spec = {"name": "x", "corpus": {"kind": "synth", "root": str(tiny_synth)}, "out": str(tmp / "out"),
            "features": ["mel", "mfcc"], "students": ["lightsernet"], "methods": {"ce": {}},
            "folds": [0, 1], "seeds": [0], "train": {"epochs": 1, "length": 8000}}
    (tmp / "x.yaml").write_text(yaml.safe_dump(spec))
    assert main(["grid", str(tmp / "x.yaml")]) == 0
    return tmp / "out"


@pytest.fixture
def other_corpus(tiny_synth, tmp_path) -> Path:
    """The synth audio as a CSV corpus whose anger is called 'angry'; every other class keeps its name."""
    return write_csv(tmp_path / "other.csv", [
        {"path": str(u.path), "label": "angry" if u.label == "anger" else u.label, "speaker": "x" + u.speaker}
        for u in load_corpus("synth", tiny_synth).utterances])


def _units(grid_out: Path) -> list[Path]:
    return sorted(p for p in (grid_out / "runs").iterdir() if p.is_dir())


def test_label_map_onto_a_class_the_run_lacks_is_refused(grid_out, other_corpus, capsys):
    unit = _units(grid_out)[0]
    # before: 'angry' mapped to a class the run never learnt silently dropped every angry utterance
    code, _, err = run_cli(["eval", unit, "--corpus", "csv", "--root", other_corpus, "--label-map", "angry=furious"],
                           capsys)
    assert code == 2 and err.count("\n") == 1
    assert "furious not a class of the run" in err and str(unit) in err and "anger" in err
    # from a class the other corpus does not have: refused as before, one line
    code, _, err = run_cli(["eval", unit, "--corpus", "csv", "--root", other_corpus, "--label-map", "anger=anger"],
                           capsys)
    assert code == 2 and err.count("\n") == 1 and "anger not a class of the csv corpus" in err
    # the right map keeps every utterance
    code, out, err = run_cli(["eval", unit, "--corpus", "csv", "--root", other_corpus, "--label-map", "angry=anger",
                              "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["unused_eval_classes"] == [] and report["n_utterances"] == 4 * 4 * 3
    assert "anger" in report["shared_classes"]


def test_eval_on_a_grid_folder_scores_every_unit_apart(grid_out, other_corpus, capsys):
    units = _units(grid_out)
    assert len(units) == 2
    argv = ["--corpus", "csv", "--root", other_corpus, "--label-map", "angry=anger", "--json"]
    code, out, err = run_cli(["eval", grid_out, *argv], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["runs"] == [str(u) for u in units]
    assert sorted((r["run"], r["fold"]) for r in report["rows"]) == [(str(u), f) for u in units
                                                                     for f in ("spk00", "spk01")]
    # one summary row per unit (never pooled), each the mean of its own two fold models, same numbers as alone
    assert sorted(s["run"] for s in report["summary"]) == [str(u) for u in units]
    assert all(s["n"] == 2 for s in report["summary"])
    for unit in units:
        code, out, _ = run_cli(["eval", unit, *argv], capsys)
        alone = json.loads(out)
        assert [r["ua"] for r in alone["rows"]] == [r["ua"] for r in report["rows"] if r["run"] == str(unit)]
    # results.db and OUT/runs stand for the grid too
    for path in (grid_out / "results.db", grid_out / "runs"):
        code, out, _ = run_cli(["eval", path, *argv], capsys)
        assert code == 0 and json.loads(out)["runs"] == report["runs"]


def test_eval_on_a_folder_without_models_says_what_to_pass(tmp_path, other_corpus, capsys):
    (tmp_path / "empty" / "runs" / "unit").mkdir(parents=True)
    code, _, err = run_cli(["eval", tmp_path / "empty", "--corpus", "csv", "--root", other_corpus], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no trained models" in err and "a run folder" in err and "grid's output folder" in err


def test_eval_table_shows_in_domain_ua(grid_out, other_corpus, capsys):
    from serkd.train.results import FoldResult

    unit = _units(grid_out)[0]
    code, out, err = run_cli(["eval", unit, "--corpus", "csv", "--root", other_corpus, "--label-map", "angry=anger"],
                             capsys)
    assert code == 0, err
    assert "in-domain UA %" in out
    own = [FoldResult.from_json(json.loads((unit / fold / "results.json").read_text())).ua
           for fold in ("spk00", "spk01")]
    for ua in own:
        assert f"{100 * ua:.2f}" in out
    code, js, _ = run_cli(["eval", unit, "--corpus", "csv", "--root", other_corpus, "--label-map", "angry=anger",
                           "--json"], capsys)
    summary = json.loads(js)["summary"][0]
    assert summary["in_domain_ua_mean"] == pytest.approx(sum(own) / 2)
    assert f"{100 * summary['in_domain_ua_mean']:.2f}" in out


def test_methods_show_whole_first_sentences(capsys):
    from serkd import distill

    code, out, _ = run_cli(["methods", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r["summary"] for r in json.loads(out)}
    # fitnet's docstring wraps its first sentence over two lines: the listing keeps all of it
    assert rows["fitnet"].endswith("a learned linear projection of the student's embedding regresses the teacher's.")
    assert rows["pkt"].endswith("similarities within the batch.")
    for name in distill.available():
        assert rows[name].endswith("."), (name, rows[name])
        assert "\n" not in rows[name]
