"""The statistics of a report: configurations, mean ± std over folds × seeds, per-class metrics, paired tests.

A *configuration* is everything that changes a result except the fold and the seed: the row fields of
:data:`GROUP_KEYS` plus every other hashed config field the run recorded (``recipe``, ``lr``,
``student_params``, a field added tomorrow...), read generically from the run's config
(:func:`config_identity`), so two runs that differ in any such field are never averaged together nor
paired in a test. Results of one configuration that come from several sources (run folders, grids'
results.db, JSON files) are pooled only when they hold different (fold, seed) pairs, and then marked
``pooled``; when two sources hold the same (fold, seed), they are kept apart, one summary row per source.

The std is the population std over folds × seeds (numpy's default, ddof=0), ``None`` for one value.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from serkd.errors import SerkdError

# the row fields that make a configuration (with the hashed config fields beyond them, see config_identity)
GROUP_KEYS = ("corpus", "student", "features", "method", "method_params", "teacher", "epochs", "selection", "role",
              "model", "train_corpus")
# config fields the rows carry themselves (GROUP_KEYS above) or that a configuration pools over
_CARRIED = ("corpus", "student", "features", "method", "method_params", "teacher", "epochs", "select", "seed")
# the fields that place a configuration in a table: a paired test never crosses them
CONTEXT_KEYS = ("corpus", "student", "features", "epochs", "selection", "role", "model", "train_corpus")
BASELINES = ("ce", "kd")
MIN_PAIRS = 6  # a two-sided exact Wilcoxon's smallest p is 2 / 2**n: 0.0625 at n = 5, 0.03125 at n = 6
COLLAPSE_SHARE = 0.8  # one class takes this share of the predictions...
COLLAPSE_EXCESS = 0.1  # ...and that much more than its share of the true labels
MARK_INCOMPLETE = "incomplete"
MARK_COLLAPSED = "collapsed"
MARK_POOLED = "pooled"  # one configuration's results gathered from several run folders / grids


# ---------------------------------------------------------------- configurations

def _unhashed() -> frozenset[str]:
    from serkd.config import RunConfig

    return frozenset(f.name for f in fields(RunConfig) if f.metadata.get("hashed", True) is False)


def config_identity(config: dict | None) -> dict[str, Any]:
    """The fields of a recorded run config that change results (the config hash's), less the seed.

    A student config is read through :class:`~serkd.config.RunConfig` (recipe presets resolved, fields at
    their seed defaults dropped, exactly as its hash sees them); keys it does not know (a newer or older
    serkd, a teacher's config) are kept as they are. Fields that never change a result (``root``, ``out``,
    ``device``, ``threads``, ``folds``...) are dropped."""
    if not isinstance(config, dict) or not config:
        return {}
    from serkd.config import RunConfig

    values = dict(config)
    if "model" not in values:  # a teacher's config names its model; a student run's never does
        known = set(RunConfig.field_names())
        try:
            run = RunConfig.from_dict({k: v for k, v in values.items() if k in known})
            values = {**run.resolved().hashed_dict(), **{k: v for k, v in values.items() if k not in known}}
        except (SerkdError, TypeError, ValueError):
            pass  # a config this version cannot build: compare it as recorded
    unhashed = _unhashed()
    return {k: v for k, v in sorted(values.items()) if k not in unhashed and k != "seed"}


def extra_config(row: dict) -> dict[str, Any]:
    """The part of a row's configuration beyond :data:`GROUP_KEYS` (``recipe``, ``lr``, ``student_params``...)."""
    return {k: v for k, v in (row.get("config") or {}).items() if k not in _CARRIED}


def _hashable(value):
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return tuple(value) if isinstance(value, list) else value


def _group_key(row: dict, group_keys) -> tuple:
    return (*(_hashable(row.get(k)) for k in group_keys), _hashable(extra_config(row)))


def source_names(sources) -> dict[str, str]:
    """Each source as the shortest name that tells it from the others: a grid's folder for its results.db,
    else the folder or file name, with as many parent folders as it takes (``a/ce``, ``b/ce``)."""
    paths = {s: Path(str(s)) for s in dict.fromkeys(sources)}
    parts = {s: (p.parent.parts if p.suffix == ".db" and p.parent.name else p.parts) for s, p in paths.items()}
    for depth in range(1, max((len(p) for p in parts.values()), default=1) + 1):
        names = {s: "/".join(p[-depth:]) for s, p in parts.items()}
        if len(set(names.values())) == len(names):
            return names
    return {s: str(s) for s in paths}


# ---------------------------------------------------------------- summary

def summarise(rows: list[dict], group_keys=GROUP_KEYS) -> list[dict]:
    """Mean ± std over folds × seeds per configuration, with n of N, marks, per-class recall."""
    return [entry for entry, _ in _summarise(rows, group_keys)]


def members_of(entry: dict, rows: list[dict], group_keys=GROUP_KEYS) -> list[dict]:
    """The rows a summary entry averages."""
    key = _group_key(entry, group_keys)
    members = [r for r in rows if _group_key(r, group_keys) == key]
    if entry.get("source") is not None:
        members = [r for r in members if r.get("source") == entry["source"]]
    return members


def _split_sources(members: list[dict]) -> list[tuple[list[dict], bool]]:
    """One configuration's rows as ``(rows, split)`` parts: all together, unless two sources hold the same
    (fold, seed), and then one part per source."""
    sources = list(dict.fromkeys(m.get("source") for m in members))
    if len(sources) > 1:
        pairs = [(m.get("fold"), m.get("seed")) for m in members]
        if len(set(pairs)) < len(pairs):
            return [([m for m in members if m.get("source") == s], True) for s in sources]
    return [(members, False)]


def _summarise(rows: list[dict], group_keys=GROUP_KEYS) -> list[tuple[dict, list[dict]]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(_group_key(row, group_keys), []).append(row)
    summary = []
    for configuration in groups.values():
        for members, split in _split_sources(configuration):
            summary.append((_entry(members, rows, group_keys, split), members))
    corpora = list(dict.fromkeys(e["corpus"] for e, _ in summary))  # corpus by corpus, teachers first, ce, kd...
    summary.sort(key=lambda g: (corpora.index(g[0]["corpus"]), g[0].get("role") != "teacher", column_order(g[0])))
    _name_variants([e for e, _ in summary])
    return summary


def _entry(members: list[dict], rows: list[dict], group_keys, split: bool) -> dict:
    wa = np.array([m["wa"] for m in members], dtype=float)
    ua = np.array([m["ua"] for m in members], dtype=float)
    n = len(members)
    expected = _expected(members, rows)
    sources = sorted({str(m.get("source")) for m in members if m.get("source") is not None})
    marks = sorted({mark for m in members for mark in (m.get("marks") or [])})
    entry = {**{k: members[0].get(k) for k in group_keys}, "config": extra_config(members[0]),
             "run": members[0].get("run"), "runs": sorted({str(m.get("run")) for m in members}),
             "sources": sources, "source": members[0].get("source") if split else None,
             "wa_mean": float(wa.mean()), "wa_std": float(wa.std()) if n > 1 else None,
             "ua_mean": float(ua.mean()), "ua_std": float(ua.std()) if n > 1 else None,
             "n": n, "n_expected": expected, "n_folds": len({m.get("fold") for m in members}),
             "n_seeds": len({m.get("seed") for m in members}),
             "complete": None if expected is None else n >= expected}
    entry.update(class_metrics(members))
    if len(sources) > 1:
        marks.append(MARK_POOLED)
    if entry["complete"] is False:
        marks.append(MARK_INCOMPLETE)
    if entry.get("collapsed"):
        marks.append(MARK_COLLAPSED)
    entry["marks"] = marks
    entry["label"] = params_text(entry)
    return entry


def _expected(members: list[dict], rows: list[dict]) -> int | None:
    """Expected (fold, seed) pairs: a run folder's run.json folds (one seed per folder); for a grid's rows
    every fold × seed that grid's rows of this corpus hold."""
    runs = {m.get("run"): m for m in members}
    if all("run_folds" in m for m in members):
        if any(m.get("run_folds") is None for m in runs.values()):
            return None
        return sum(len(m["run_folds"]) for m in runs.values())
    if not all("unit_key" in m for m in members):
        return None  # rows from elsewhere (teacher eval, a JSON file): nothing says how many there should be
    total = 0
    for source in {m.get("source") for m in members}:
        grid = [r for r in rows if r.get("corpus") == members[0].get("corpus") and "unit_key" in r
                and r.get("source") == source]
        total += len({r.get("fold") for r in grid}) * len({r.get("seed") for r in grid})
    return total


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ",".join(f"{k}={_text(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def _shown(entry: dict) -> dict[str, Any]:
    """An entry's extra config as a reader wants it: ``recipe`` always (``seed`` when not recorded), and the
    recipe's own fields only where they differ from what the recipe sets."""
    from serkd.config import RECIPES, RunConfig

    config = dict(entry["config"])
    if entry.get("role") == "teacher" or config.get("recipe", "seed") not in RECIPES:
        return config
    config["recipe"] = config.get("recipe", "seed")
    try:
        preset = RunConfig(recipe=config["recipe"], epochs=int(entry.get("epochs") or 100)).resolved()
    except (SerkdError, TypeError, ValueError):
        return config
    seed = RECIPES["seed"]
    for name in RunConfig.RECIPE_FIELDS:
        value = config.get(name, seed[name])  # the hash leaves out a field at its seed value
        config[name] = value
        if value == getattr(preset, name):
            del config[name]
    return config


def _name_variants(summary: list[dict]) -> None:
    """``variant``: what tells an entry apart from the others of its corpus, role, student and features beyond
    the method: the config fields whose values differ among them (``recipe=strong``, ``pooling=stats``), a
    cross-corpus model's kind, and the source when sources are kept apart."""
    from serkd.config import RunConfig, defaults

    fallback = defaults(RunConfig)
    sources = source_names(e["source"] for e in summary if e.get("source") is not None)
    def place(e: dict) -> tuple:
        return e["corpus"], e.get("role"), e["student"], e["features"]

    for key in dict.fromkeys(map(place, summary)):
        entries = [e for e in summary if place(e) == key]
        shown = {id(e): _shown(e) for e in entries}
        known = [e for e in entries if e["config"]]  # rows without a recorded config (eval rows) say nothing
        names = sorted({k for e in known for k in shown[id(e)]})
        varying = [k for k in names if len({_hashable(shown[id(e)].get(k, fallback.get(k))) for e in known}) > 1]
        for e in entries:
            parts = []
            for k in varying if e["config"] else []:
                value = shown[id(e)].get(k, fallback.get(k))
                if k == "student_params" and isinstance(value, dict):
                    parts += [f"{p}={_text(v)}" for p, v in sorted(value.items())]
                elif value not in (None, {}, []):
                    parts.append(f"{k}={_text(value)}")
            if e.get("train_corpus"):
                parts.append(f"from {e['train_corpus']}")
            if e.get("model"):
                parts.append(f"{e['model']} model" if e["model"] == "final" else f"{e['model']} models")
            if e.get("source") is not None:
                parts.append(f"[{sources[e['source']]}]")
            e["variant"] = " ".join(parts)


def params_text(s: dict) -> str:
    """``kd`` or ``kd(T=4,alpha=0.5)``: the column a summary row goes to."""
    params = s.get("method_params") or {}
    if isinstance(params, str):
        params = json.loads(params)
    inner = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{s['method']}({inner})" if inner else str(s["method"])


def column_order(g: dict) -> tuple:
    order = {"teacher": 0, "ce": 1, "kd": 2}
    return order.get(g["method"], 3), str(g["method"]), g["label"]


# ---------------------------------------------------------------- per class

def class_metrics(members: list[dict]) -> dict:
    """Per-class recall and macro-F1 from the confusion matrices summed over ``members`` (empty when their
    labels differ or none is stored), and whether one class takes nearly all predictions (``collapsed``).
    Macro-F1 averages the classes present in the test folds; recall of an absent class is ``None``."""
    labels = members[0].get("labels")
    if not labels or any(m.get("labels") != labels or not m.get("confusion") for m in members):
        return {}
    matrix = np.sum([np.asarray(m["confusion"], dtype=np.int64) for m in members], axis=0)
    return {"labels": list(labels), "confusion": matrix.tolist(), **confusion_metrics(matrix, labels)}


def confusion_metrics(matrix: np.ndarray, labels: list[str]) -> dict:
    matrix = np.asarray(matrix, dtype=float)
    true, predicted, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=precision + recall > 0)
    present = true > 0
    total = matrix.sum()
    top = int(predicted.argmax()) if total else 0
    top_share = float(predicted[top] / total) if total else 0.0
    true_share = float(true[top] / total) if total else 0.0
    return {"recall": {label: (float(recall[i]) if present[i] else None) for i, label in enumerate(labels)},
            "macro_f1": float(f1[present].mean()) if present.any() else None,
            "top_class": labels[top], "top_share": top_share,
            "collapsed": bool(total) and top_share >= COLLAPSE_SHARE and top_share - true_share >= COLLAPSE_EXCESS}


# ---------------------------------------------------------------- paired tests

def _context(entry: dict) -> tuple:
    """Where a configuration sits in a table: two entries are paired only when all of this is equal."""
    return (*(_hashable(entry.get(k)) for k in CONTEXT_KEYS), _hashable(entry["config"]))


def wilcoxon_tests(rows: list[dict]) -> list[dict]:
    """Each student method against ``ce`` and against ``kd`` of the same configuration otherwise (corpus, student,
    features, epochs, selection and every other config field equal): a paired two-sided Wilcoxon signed-rank
    test over the (fold, seed) pairs both hold (``scipy.stats.wilcoxon``). Entries kept apart by source are
    compared within their source. Under :data:`MIN_PAIRS` pairs p cannot reach 0.05: p is ``None`` and
    ``note`` says so."""
    cells: dict[tuple, list[tuple[dict, list[dict]]]] = {}
    for entry, members in _summarise(rows):
        if entry.get("role") != "teacher":
            cells.setdefault(_context(entry), []).append((entry, members))
    tests = []
    for groups in cells.values():
        for source in dict.fromkeys(e.get("source") for e, _ in groups):
            # entries of this source, and those not kept apart by source (they belong to every source)
            mine = [g for g in groups if g[0].get("source") in (None, source)]
            chosen = {b: _baseline(mine, b) for b in BASELINES}
            for baseline, base in chosen.items():
                if base is None:
                    continue
                for entry, members in mine:
                    if entry is base[0] or (baseline == "kd" and chosen["ce"] and entry is chosen["ce"][0]):
                        continue  # ce against kd is kd against ce, tested once
                    if source is not None and entry.get("source") != source:
                        continue  # tested in its own source's round
                    test = paired_test(members, base[1])
                    if test["n"]:
                        tests.append({"corpus": entry["corpus"], "student": entry["student"],
                                      "features": entry["features"], "variant": entry.get("variant", ""),
                                      "config": entry["config"], "method": entry["label"],
                                      "baseline": base[0]["label"], **test})
    return tests


def _baseline(groups: list[tuple[dict, list[dict]]], method: str) -> tuple[dict, list[dict]] | None:
    """The ``method`` group a table compares against: default parameters first, then the most results."""
    candidates = [g for g in groups if g[0]["method"] == method]
    return min(candidates, key=lambda g: (bool(g[0].get("method_params")), -g[0]["n"]), default=None)


def paired_test(members: list[dict], baseline: list[dict]) -> dict:
    """``n`` common (fold, seed) pairs, ``p_wa``, ``p_ua``, ``mean_diff_wa``, ``mean_diff_ua`` (members − baseline)."""
    ours = {(m.get("fold"), m.get("seed")): m for m in members}
    theirs = {(m.get("fold"), m.get("seed")): m for m in baseline}
    pairs = sorted(set(ours) & set(theirs), key=str)
    out = {"n": len(pairs)}
    notes = []
    for metric in ("wa", "ua"):
        a = np.array([ours[p][metric] for p in pairs], dtype=float)
        b = np.array([theirs[p][metric] for p in pairs], dtype=float)
        out[f"mean_diff_{metric}"] = float((a - b).mean()) if pairs else None
        out[f"p_{metric}"], note = _wilcoxon(a, b)
        if note and note not in notes:
            notes.append(note)
    out["note"] = "; ".join(notes) or None
    return out


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> tuple[float | None, str | None]:
    if len(a) < MIN_PAIRS:
        return None, f"{len(a)} pair(s): p < 0.05 needs at least {MIN_PAIRS} (more folds or seeds)"
    if np.all(a == b):
        return 1.0, "all paired differences are zero"
    from scipy.stats import wilcoxon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few non-zero differences: scipy warns, the p stands
        return float(wilcoxon(a, b).pvalue), None
