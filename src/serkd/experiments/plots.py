"""Figures of a report (:func:`serkd.experiments.report.collect`): PNGs with matplotlib (Agg, files only) and
TensorBoard event files of every unit's per-epoch history.

:func:`write_plots` (``serkd report --plots DIR``) writes, per corpus: ``confusion_*.png`` per summary row
(confusions summed over folds × seeds, row-normalised), ``bars_<corpus>_<student>.png`` (test WA/UA mean ± std
per features × method, chance UA drawn) and ``curves_<corpus>.png`` (validation UA per epoch, mean over folds ×
seeds per configuration; one file per student × features when there are
more than :data:`MAX_LEGEND`); and ``tensorboard/<run>/<fold>[_seed<n>]/``. :func:`plot_report` is the one-figure
summary of ``--plot PNG``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from serkd.experiments.report import column_labels, count_text, members_of
from serkd.hashing import stable_hash
from serkd.io import atomic_write_with

MAX_LEGEND = 12  # more entries than this and a legend covers the figure: the rest go unnamed
MAX_SLUG = 120


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(out, lambda tmp: fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png",
                                                   bbox_inches="tight"), suffix=out.suffix)
    _pyplot().close(fig)
    return out


def _slug(*parts) -> str:
    """A file-name part; a long one keeps its start and a hash of the whole (file names stop at 255 bytes)."""
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    slug = re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).strip("-") or "unnamed"
    return slug if len(slug) <= MAX_SLUG else f"{slug[:MAX_SLUG - 9]}-{stable_hash(slug, 8)}"


def bar_labels(summary: list[dict], with_student: bool = False) -> list[str]:
    """Unique x labels: ``[student/]features/method[(params)][ @teacher][ Nep][ variant]``."""
    labels = {}
    for corpus in dict.fromkeys(s["corpus"] for s in summary):
        labels.update(column_labels([s for s in summary if s["corpus"] == corpus]))
    corpora = len({s["corpus"] for s in summary}) > 1
    out = []
    for s in summary:
        parts = ([s["corpus"]] if corpora else []) + ([s["student"]] if with_student else [])
        variant = f" {s['variant']}" if s.get("variant") else ""
        out.append("/".join(str(p) for p in [*parts, s["features"] or "-", labels[id(s)]]) + variant)
    seen: dict[str, int] = {}
    for i, label in enumerate(out):  # a last resort; the parts above already tell configurations apart
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            out[i] = f"{label} #{seen[label]}"
    return out


def _chance(summary: list[dict]) -> float | None:
    sizes = {len(s["labels"]) for s in summary if s.get("labels")}
    return 1 / sizes.pop() if len(sizes) == 1 else None


def _bars(ax, summary: list[dict], labels: list[str]) -> None:
    x = np.arange(len(summary))
    for offset, metric in ((-0.2, "wa"), (0.2, "ua")):
        spread = [np.nan if s[f"{metric}_std"] is None else 100 * s[f"{metric}_std"] for s in summary]  # n=1: none
        ax.bar(x + offset, [100 * s[f"{metric}_mean"] for s in summary], width=0.4, yerr=spread, capsize=4,
               label=metric.upper())
    for i, s in enumerate(summary):
        count = f"n={count_text(s)}"
        ax.text(i, 2, count, ha="center", va="bottom", fontsize=7, color="white" if s["ua_mean"] > 0.05 else "black")
    chance = _chance(summary)
    if chance:
        ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label=f"chance UA (1/{round(1 / chance)})")
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test % (mean ± std over folds × seeds)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)


def _curves(ax, summary: list[dict], rows: list[dict], labels: list[str]) -> int:
    """Validation UA per epoch of each configuration with a per-epoch history; returns how many were drawn."""
    from matplotlib.ticker import MaxNLocator

    colors = _pyplot().get_cmap("tab10" if len(summary) <= 10 else "tab20")
    drawn = 0
    for i, (s, label) in enumerate(zip(summary, labels)):
        histories = [h for h in (m.get("history") for m in members_of(s, rows)) if has_curve(h)]
        if not histories:
            continue
        color = colors(i % colors.N)
        by_epoch: dict[int, list[float]] = {}
        for history in histories:
            if len(summary) <= 4:  # each fold's curve too: only while they do not bury the means
                ax.plot([h["epoch"] for h in history], [100 * h["valid_ua"] for h in history], color=color,
                        alpha=0.25, linewidth=0.8)
            for h in history:
                by_epoch.setdefault(h["epoch"], []).append(100 * h["valid_ua"])
        epochs = sorted(by_epoch)
        ax.plot(epochs, [np.mean(by_epoch[e]) for e in epochs], color=color, linewidth=2, marker="o" if
                len(epochs) <= 12 else None, markersize=3, label=label if drawn < MAX_LEGEND else None)
        drawn += 1
    chance = _chance(summary)
    if chance:
        ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label=f"chance (1/{round(1 / chance)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation UA %")
    ax.set_ylim(0, 100)
    title = "validation UA: mean over folds × seeds" + (" (thin: each fold)" if len(summary) <= 4 else "")
    if drawn > MAX_LEGEND:
        title += f"; legend: first {MAX_LEGEND} of {drawn}"
    ax.set_title(title, fontsize=9)
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return drawn


def has_curve(history: list[dict] | None) -> bool:
    """A per-epoch history (students, CNN and WavLM teachers); the eGeMAPS teacher's holds one record per
    regularisation strength C instead, and cross-corpus or teacher-eval rows hold none: no curve to draw."""
    return bool(history) and all("epoch" in h and h.get("valid_ua") is not None for h in history)


def plot_report(report: dict, out: Path) -> Path:
    """One figure: test WA/UA per configuration and the validation curves (``serkd report --plot PNG``)."""
    plt = _pyplot()
    summary = report["summary"]
    labels = bar_labels(summary, with_student=True)
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"wspace": 0.45})
    _bars(bars, summary, labels)
    bars.set_title("test WA / UA")
    _curves(curves, summary, report["rows"], labels)
    return _save(fig, Path(out))


def plot_confusion(entry: dict, label: str, out: Path) -> Path:
    plt = _pyplot()
    matrix = np.asarray(entry["confusion"], dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    classes = entry["labels"]
    size = max(4.5, 0.7 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(100 * normalised, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{100 * normalised[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), [f"{c} ({int(t)})" for c, t in zip(classes, totals[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (utterances)")
    marks = f" [{', '.join(entry['marks'])}]" if entry.get("marks") else ""
    title = f"{entry['corpus']}: {label}\nUA {100 * entry['ua_mean']:.1f}%, n={count_text(entry)}{marks}"
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of true class")
    return _save(fig, out)


def write_plots(report: dict, folder: str | Path, tensorboard: bool = True) -> list[Path]:
    """Confusions, bars and curves per corpus (see the module docstring), and TensorBoard event files."""
    plt = _pyplot()
    folder = Path(folder)
    written = []
    summary, rows = report["summary"], report["rows"]
    for corpus in dict.fromkeys(s["corpus"] for s in summary):
        entries = [s for s in summary if s["corpus"] == corpus]
        labels = dict(zip(map(id, entries), bar_labels(entries, with_student=True)))
        for s in entries:
            if s.get("confusion"):
                out = folder / f"confusion_{_slug(corpus, labels[id(s)])}.png"
                written.append(plot_confusion(s, labels[id(s)], out))
        for student in dict.fromkeys(s["student"] for s in entries):
            mine = [s for s in entries if s["student"] == student]
            fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(mine) + 3), 4.5))
            _bars(ax, mine, bar_labels(mine))
            ax.set_title(f"{corpus}: {student}, test WA / UA", fontsize=10)
            written.append(_save(fig, folder / f"bars_{_slug(corpus, student)}.png"))
        # one figure while its legend stays readable, else one per student × features
        parts = {(): entries} if len(entries) <= MAX_LEGEND else {
            key: [s for s in entries if (s["student"], s["features"]) == key]
            for key in dict.fromkeys((s["student"], s["features"]) for s in entries)}
        for key, part in parts.items():
            fig, ax = plt.subplots(figsize=(9, 4.5))
            drawn = _curves(ax, part, rows, [labels[id(s)] for s in part])
            ax.set_title(f"{corpus}: {ax.get_title()}", fontsize=9)
            if drawn:
                written.append(_save(fig, folder / f"curves_{_slug(corpus, *key)}.png"))
            else:
                plt.close(fig)
    if tensorboard:
        written += write_tensorboard(rows, folder / "tensorboard")
    return written


def write_tensorboard(rows: list[dict], folder: str | Path) -> list[Path]:
    """One event-file folder per (run, fold, seed) with its per-epoch ``train_loss``, ``valid_ua``, ``valid_wa``,
    ``lr`` and the test WA/UA at the chosen epoch; ``tensorboard --logdir DIR/tensorboard`` compares them.
    Rows without a per-epoch history (:func:`has_curve`) have nothing to show there."""
    from serkd.train.results import write_curves

    folder = Path(folder)
    written, used = [], set()
    for row in rows:
        if not has_curve(row.get("history")):
            continue
        name = Path(str(row.get("run"))).name if row.get("run") else "run"
        unit = folder / _slug(name) / _slug(row.get("fold"), None if row.get("seed") is None else f"seed{row['seed']}")
        base, k = unit, 1
        while unit in used:  # two paths whose folders share a name
            k += 1
            unit = base.with_name(f"{base.name}_{k}")
        used.add(unit)
        write_curves(unit, row)
        written.append(unit)
    return written
