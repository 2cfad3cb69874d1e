"""``serkd report`` on FoldResult JSON written here directly (no training): numbers against hand computations,
scipy and sklearn; formats; incomplete runs; plots."""

from __future__ import annotations

import csv
import io
import json
import sys
import types

import numpy as np
import pytest
from conftest import run_cli

from serkd.errors import SerkdError
from serkd.experiments.report import collect, confusion_metrics, paired_test, report_json
from serkd.train.results import FoldResult

LABELS = ["anger", "happiness", "sadness", "neutral"]
GOOD = [[3, 1, 0, 0], [0, 4, 0, 0], [1, 0, 2, 1], [0, 0, 0, 4]]
COLLAPSED = [[4, 0, 0, 0], [4, 0, 0, 0], [3, 0, 1, 0], [4, 0, 0, 0]]


def fold_result(fold: str, wa: float, ua: float, *, confusion=GOOD, corpus="synth", student="lightsernet",
                method="ce", features="mel", seed=0, epochs=3, **kw) -> FoldResult:
    history = [{"epoch": e, "train_loss": 1.5 / e, "valid_wa": wa * (0.4 + e / 5), "valid_ua": ua * (0.4 + e / 5),
                "lr": 1e-3} for e in (1, 2, 3)]
    return FoldResult(fold=fold, test=[fold], valid=["x"], wa=wa, ua=ua, labels=LABELS, confusion=confusion,
                      corpus=corpus, student=student, method=method, features=features, seed=seed, epochs=epochs,
                      best_epoch=3, history=history, n_test=int(np.sum(confusion)), **kw)


def write_run(folder, results: list[FoldResult], expected: list[str] | None = None):
    folder.mkdir(parents=True)
    names = expected if expected is not None else [r.fold for r in results]
    (folder / "run.json").write_text(json.dumps({"folds": [{"name": n} for n in names]}))
    for r in results:
        (folder / r.fold).mkdir()
        (folder / r.fold / "results.json").write_text(json.dumps(r.to_json()))
    return folder


FOLDS = [f"spk{i:02d}" for i in range(6)]
CE_UA = [0.50, 0.55, 0.60, 0.52, 0.58, 0.61]
KD_UA = [0.56, 0.57, 0.66, 0.55, 0.60, 0.70]


@pytest.fixture
def grid(tmp_path):
    """ce and kd over 6 folds, a second corpus, a teacher, an unfinished run."""
    runs = tmp_path / "runs"
    write_run(runs / "ce", [fold_result(f, ua + 0.05, ua) for f, ua in zip(FOLDS, CE_UA)])
    write_run(runs / "kd", [fold_result(f, ua + 0.04, ua, method="kd", method_params={"T": 4}, teacher="t/cnn")
                            for f, ua in zip(FOLDS, KD_UA)])
    write_run(runs / "teacher", [fold_result(f, 0.8, 0.75, student="cnn", method="teacher", role="teacher")
                                 for f in FOLDS])
    write_run(runs / "other", [fold_result("a", 0.4, 0.3, corpus="cremad"), fold_result("b", 0.5, 0.4,
                                                                                         corpus="cremad")])
    write_run(runs / "partial", [fold_result("spk00", 0.6458, 0.6, method="fitnet", confusion=COLLAPSED)],
              expected=["spk00", "spk01", "spk02"])
    write_run(runs / "interrupted", [], expected=["spk00", "spk01"])
    return runs


def _summary(report, **match):
    (s,) = [s for s in report["summary"] if all(s[k] == v for k, v in match.items())]
    return s


def test_means_stds_and_cells_by_hand(grid):
    report = collect(sorted(grid.iterdir()))
    ce = _summary(report, method="ce", corpus="synth")
    assert ce["ua_mean"] == pytest.approx(np.mean(CE_UA)) and ce["ua_std"] == pytest.approx(np.std(CE_UA))
    assert ce["wa_mean"] == pytest.approx(np.mean(CE_UA) + 0.05)
    assert (ce["n"], ce["n_expected"], ce["complete"], ce["marks"]) == (6, 6, True, [])
    (synth,) = [t for t in report["tables"] if t["corpus"] == "synth"]
    assert synth["columns"][:3] == ["teacher", "ce", "kd(T=4)"]
    assert [r["student"] for r in synth["rows"]] == ["cnn", "lightsernet"]  # the teacher first
    cell = synth["rows"][1]["cells"]["ce"]
    assert cell == (f"{100 * np.mean(CE_UA) + 5:.2f} ± {100 * np.std(CE_UA):.2f} / "
                    f"{100 * np.mean(CE_UA):.2f} ± {100 * np.std(CE_UA):.2f} (6)")
    assert synth["rows"][0]["cells"]["teacher"].startswith("80.00 ± 0.00 / 75.00 ± 0.00 (6)")


def test_incomplete_run_shows_n_of_n_and_no_plus_minus(grid):
    report = collect([grid / "partial"])
    (s,) = report["summary"]
    assert (s["n"], s["n_expected"], s["complete"], s["ua_std"]) == (1, 3, False, None)
    assert "incomplete" in s["marks"]
    cell = report["tables"][0]["rows"][0]["cells"]["fitnet"]
    assert cell == "64.58 / 60.00 (1/3) *" and "±" not in cell
    assert report["runs"][0]["status"] == "incomplete" and "spk01" in report["runs"][0]["reason"]


def test_interrupted_folder_is_listed_not_fatal(grid, capsys):
    report = collect([grid / "ce", grid / "interrupted"])
    (interrupted,) = [r for r in report["runs"] if r["run"].endswith("interrupted")]
    assert interrupted["status"] == "incomplete" and interrupted["folds_expected"] == ["spk00", "spk01"]
    code, out, _ = run_cli(["report", *sorted(grid.iterdir())], capsys)
    assert code == 0 and "interrupted" in out and "incomplete" in out
    with pytest.raises(SerkdError, match="no fold results"):
        collect([grid / "interrupted", grid / "nothing-here"])


def test_corpora_are_never_averaged_together(grid):
    report = collect([grid / "ce", grid / "other"])
    assert {(s["corpus"], s["n"]) for s in report["summary"]} == {("synth", 6), ("cremad", 2)}
    assert [t["corpus"] for t in report["tables"]] == ["synth", "cremad"]
    assert _summary(report, corpus="cremad")["ua_mean"] == pytest.approx(0.35)


def test_seeds_pool_with_folds(tmp_path):
    a = write_run(tmp_path / "s0", [fold_result(f, 0.5, 0.4 + i / 10, seed=0) for i, f in enumerate(FOLDS[:3])])
    b = write_run(tmp_path / "s1", [fold_result(f, 0.5, 0.5 + i / 10, seed=1) for i, f in enumerate(FOLDS[:3])])
    (s,) = collect([a, b])["summary"]
    values = [0.4, 0.5, 0.6, 0.5, 0.6, 0.7]
    assert (s["n"], s["n_expected"], s["n_folds"], s["n_seeds"]) == (6, 6, 3, 2)
    assert s["ua_mean"] == pytest.approx(np.mean(values)) and s["ua_std"] == pytest.approx(np.std(values))


def test_wilcoxon_against_scipy(grid):
    from scipy.stats import wilcoxon

    report = collect([grid / "ce", grid / "kd", grid / "teacher"])
    (test,) = report["tests"]  # the teacher is not tested; kd against ce once, not ce against kd again
    assert (test["method"], test["baseline"], test["n"], test["student"]) == ("kd(T=4)", "ce", 6, "lightsernet")
    assert test["p_ua"] == pytest.approx(wilcoxon(KD_UA, CE_UA).pvalue)
    kd_wa, ce_wa = np.array(KD_UA) + 0.04, np.array(CE_UA) + 0.05
    assert test["p_wa"] == pytest.approx(wilcoxon(kd_wa, ce_wa).pvalue)
    assert test["mean_diff_ua"] == pytest.approx(np.mean(np.subtract(KD_UA, CE_UA)))
    assert test["note"] is None
    assert json.loads(json.dumps(report_json(report)))["tests"][0]["p_ua"] == pytest.approx(test["p_ua"])


def test_wilcoxon_under_six_pairs_and_zero_differences():
    rows = [{"fold": f, "seed": 0, "wa": 0.5, "ua": 0.5 + i / 100} for i, f in enumerate(FOLDS[:5])]
    better = [{**r, "ua": r["ua"] + 0.1, "wa": r["wa"] + 0.1} for r in rows]
    few = paired_test(better, rows)
    assert few["n"] == 5 and few["p_ua"] is None and few["p_wa"] is None and "at least 6" in few["note"]
    assert few["mean_diff_ua"] == pytest.approx(0.1)
    rows = [{"fold": f, "seed": s, "wa": 0.5, "ua": 0.5} for f in FOLDS[:3] for s in (0, 1)]
    same = paired_test(rows, rows)
    assert (same["n"], same["p_ua"], same["mean_diff_ua"]) == (6, 1.0, 0.0) and "zero" in same["note"]


def test_per_class_against_sklearn():
    from sklearn.metrics import f1_score, recall_score

    matrix = np.array([[5, 1, 0, 2], [0, 4, 3, 0], [1, 0, 6, 1], [0, 0, 0, 0]])  # neutral absent from the tests
    y_true = np.repeat(np.arange(4), matrix.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(4), row) for row in matrix])
    metrics = confusion_metrics(matrix, LABELS)
    expected = recall_score(y_true, y_pred, labels=[0, 1, 2], average=None)
    assert [metrics["recall"][c] for c in LABELS[:3]] == pytest.approx(expected)
    assert metrics["recall"]["neutral"] is None
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro"))
    assert not metrics["collapsed"]


def test_per_class_sums_folds_and_flags_collapse(grid, capsys):
    report = collect([grid / "ce", grid / "partial"])
    ce = _summary(report, method="ce")
    assert ce["confusion"] == (6 * np.array(GOOD)).tolist()
    assert ce["recall"]["sadness"] == pytest.approx(0.5) and not ce["collapsed"]
    fitnet = _summary(report, method="fitnet")
    assert fitnet["collapsed"] and fitnet["top_class"] == "anger" and fitnet["top_share"] == pytest.approx(15 / 16)
    assert "collapsed" in fitnet["marks"]
    code, out, _ = run_cli(["report", grid / "ce", grid / "partial", "--per-class"], capsys)
    assert code == 0 and "macro-F1" in out and "collapsed" in out


def test_formats_parse(grid, capsys):
    paths = [grid / "ce", grid / "kd", grid / "teacher", grid / "other"]
    code, out, _ = run_cli(["report", *paths, "--format", "csv", "--per-class"], capsys)
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert {"table", "corpus", "student", "features", "method", "n", "wa_mean", "wa_std", "ua_mean", "ua_std",
            "p_ua", "recall_anger"} <= set(table[0])
    (ce,) = [r for r in table if r["table"] == "summary" and r["corpus"] == "synth" and r["method"] == "ce"]
    assert float(ce["ua_mean"]) == pytest.approx(np.mean(CE_UA)) and float(ce["ua_std"]) == pytest.approx(np.std(CE_UA))
    assert int(ce["n"]) == 6 and float(ce["recall_sadness"]) == pytest.approx(0.5)
    (test,) = [r for r in table if r["table"] == "test"]
    assert (test["method"], test["baseline"], int(test["n"])) == ("kd(T=4)", "ce", 6)
    from scipy.stats import wilcoxon

    assert float(test["p_ua"]) == pytest.approx(wilcoxon(KD_UA, CE_UA).pvalue)
    assert {r["method"] for r in table if r["corpus"] == "synth"} == {"teacher", "ce", "kd(T=4)"}
    code, out, _ = run_cli(["report", *paths, "--format", "md", "--per-class"], capsys)
    assert "| student | features | teacher | ce | kd(T=4) |" in out and "|---|" in out and "macro-F1" in out
    assert "### paired Wilcoxon signed-rank" in out and "| kd(T=4) | ce | 6 |" in out
    code, out, _ = run_cli(["report", *paths, "--format", "latex"], capsys)
    assert out.count(r"\begin{tabular}") == 3 and r"$\pm$" in out and r"\end{tabular}" in out  # 2 corpora + tests
    assert "kd(T=4) & ce & 6" in out


def test_json_keeps_its_shape(grid, capsys):
    code, out, _ = run_cli(["report", grid / "ce", grid / "kd", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"rows", "summary", "runs", "tests"}
    assert "history" not in report["rows"][0] and {"fold", "wa", "ua", "marks"} <= set(report["rows"][0])
    summary_keys = {"wa_mean", "wa_std", "ua_mean", "ua_std", "n_folds", "n", "n_expected", "marks"}
    assert summary_keys <= set(report["summary"][0])
    assert set(report["tests"][0]) >= {"student", "features", "method", "baseline", "n", "p_wa", "p_ua", "mean_diff_ua"}


def test_marks_are_kept(tmp_path):
    run = write_run(tmp_path / "leaky", [fold_result(f, 0.5, 0.5, method="kd", marks=["leaky-teacher", "test-selected"])
                                         for f in FOLDS[:2]])
    report = collect([run])
    assert report["rows"][0]["marks"] == ["leaky-teacher", "test-selected"]
    assert report["summary"][0]["marks"] == ["leaky-teacher", "test-selected"]
    assert "leaky-teacher" in report["tables"][0]["notes"][0]


def test_results_db_goes_through_the_store(tmp_path, monkeypatch):
    db = tmp_path / "results.db"
    db.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "serkd.experiments.store", None)  # as if the module were absent
    monkeypatch.delattr("serkd.experiments.store", raising=False)
    with pytest.raises(SerkdError, match=r"needs serkd\.experiments\.store"):
        collect([db])
    rows = [{**fold_result(f, 0.5, ua).to_json(), "run": f"ce-{f}", "unit_key": f, "config_hash": "c"}
            for f, ua in zip(FOLDS[:4], CE_UA)]
    store = types.SimpleNamespace(read_results=lambda path: rows if path == db else [])
    monkeypatch.setitem(sys.modules, "serkd.experiments.store", store)
    monkeypatch.setattr("serkd.experiments.store", store, raising=False)
    report = collect([tmp_path])  # a grid's output folder: its results.db
    (s,) = report["summary"]
    assert (s["n"], s["n_expected"], s["ua_mean"]) == (4, 4, pytest.approx(np.mean(CE_UA[:4])))
    assert report["rows"][0]["unit_key"] == "spk00"


def test_plots_are_written(grid, tmp_path, capsys):
    out = tmp_path / "plots"
    paths = [grid / "ce", grid / "kd", grid / "teacher", grid / "partial", grid / "other"]
    code, _, err = run_cli(["report", *paths, "--plots", out, "--plot", tmp_path / "one.png"], capsys)
    assert code == 0, err
    from PIL import Image

    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"bars_synth_lightsernet.png", "bars_synth_cnn.png", "curves_synth.png", "curves_cremad.png"} <= names
    assert len([n for n in names if n.startswith("confusion_synth")]) == 4
    for png in [*pngs, tmp_path / "one.png"]:
        width, height = Image.open(png).size
        assert png.stat().st_size > 5000 and width > 300 and height > 300
    assert len(list((out / "tensorboard").rglob("events.out.tfevents.*"))) == 6 + 6 + 6 + 1 + 2


def write_configured_run(folder, results: list[FoldResult], **config):
    """A run folder whose run.json records its config, as serkd train writes it."""
    write_run(folder, results)
    record = json.loads((folder / "run.json").read_text())
    base = {"corpus": "synth", "root": "/data/synth", "out": str(folder), "epochs": 3, "threads": 1, "device": "cpu"}
    record["config"] = {**base, **config}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def test_two_sources_of_one_configuration_are_marked_pooled_or_kept_apart(tmp_path, capsys):
    first = write_configured_run(tmp_path / "a" / "ce", [fold_result(f, 0.5, 0.5) for f in FOLDS[:3]])
    other_folds = write_configured_run(tmp_path / "b" / "ce", [fold_result(f, 0.6, 0.6) for f in FOLDS[3:]])
    same_folds = write_configured_run(tmp_path / "c" / "ce", [fold_result(f, 0.7, 0.7) for f in FOLDS[:3]])
    (pooled,) = collect([first, other_folds])["summary"]
    assert pooled["n"] == 6 and "pooled" in pooled["marks"] and pooled["sources"] == sorted([str(first),
                                                                                             str(other_folds)])
    report = collect([first, same_folds])  # the same folds twice: never averaged, one row per source
    assert sorted((s["n"], round(s["ua_mean"], 6), s["variant"]) for s in report["summary"]) == [
        (3, 0.5, "[a/ce]"), (3, 0.7, "[c/ce]")]
    assert all(s["complete"] and "pooled" not in s["marks"] for s in report["summary"])
    code, out, _ = run_cli(["report", first, other_folds, "--format", "md"], capsys)
    assert code == 0 and "(6) *" in out and "lightsernet/mel/ce: pooled" in out


def test_configurations_differ_in_any_hashed_field_and_tests_never_cross_them(tmp_path, capsys):
    runs = tmp_path / "runs"
    kd = [fold_result(f, ua + 0.04, ua, method="kd", teacher="t") for f, ua in zip(FOLDS, KD_UA)]
    write_configured_run(runs / "ce", [fold_result(f, ua + 0.05, ua) for f, ua in zip(FOLDS, CE_UA)])
    write_configured_run(runs / "kd", kd, method="kd", teacher="t")
    # the same method and epochs, but another recipe / learning rate / student option: other configurations
    write_configured_run(runs / "kd-strong", kd, method="kd", teacher="t", recipe="strong")
    write_configured_run(runs / "ce-lr", [fold_result(f, 0.5, 0.5) for f in FOLDS], lr=0.01)
    write_configured_run(runs / "ce-stats", [fold_result(f, 0.5, 0.5) for f in FOLDS],
                         student_params={"pooling": "stats"})
    # the same config but twice the epochs: its own column, and no test pairs it with 3-epoch runs
    write_configured_run(runs / "kd-6ep", [fold_result(f, 0.9, 0.9, method="kd", teacher="t", epochs=6)
                                           for f in FOLDS], method="kd", teacher="t", epochs=6)
    report = collect(sorted(runs.iterdir()))
    variants = {(s["label"], s["epochs"], s["variant"]) for s in report["summary"]}
    default = "lr=0.001 recipe=seed"  # a field that differs somewhere is shown everywhere, defaults too
    assert variants == {("ce", 3, default), ("kd", 3, default), ("kd", 3, "lr=0.001 recipe=strong"),
                        ("ce", 3, "lr=0.01 recipe=seed"), ("ce", 3, f"{default} pooling=stats"), ("kd", 6, default)}
    assert all(s["n"] == 6 and "pooled" not in s["marks"] for s in report["summary"])
    (plain,) = [s for s in report["summary"] if s["variant"] == default and s["label"] == "ce"]
    assert plain["ua_mean"] == pytest.approx(np.mean(CE_UA))
    (test,) = report["tests"]  # kd against ce of the same config: not the strong kd, not the 6-epoch kd
    assert (test["method"], test["baseline"], test["variant"]) == ("kd", "ce", default)
    assert test["p_ua"] == pytest.approx(__import__("scipy.stats").stats.wilcoxon(KD_UA, CE_UA).pvalue)
    (table,) = report["tables"]
    assert "kd 6ep" in table["columns"] and "kd 3ep" in table["columns"]
    code, out, _ = run_cli(["report", *sorted(runs.iterdir()), "--format", "csv"], capsys)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["config"] for r in rows if r["table"] == "summary"} == {v for _, _, v in variants}


def test_report_reads_json_row_files(grid, tmp_path, capsys):
    code, out, _ = run_cli(["report", grid / "ce", "--json"], capsys)
    saved = tmp_path / "ce.json"
    saved.write_text(out)
    again = collect([saved])
    assert again["runs"] == [{"run": str(saved), "status": "json", "folds_done": 6}]
    assert again["summary"][0]["ua_mean"] == pytest.approx(np.mean(CE_UA))
    bad = tmp_path / "bad.json"
    bad.write_text('{"folds": []}')
    code, _, err = run_cli(["report", bad], capsys)
    assert code == 2 and err.strip() == (f'serkd: error: {bad}: expected a JSON object with "rows" (the --json '
                                         "output of serkd report, eval or teacher eval)")
