"""Plots of a report: WA/UA mean ± std per run, and each fold's validation UA per epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serkd.io import atomic_write_with, read_json


def plot_report(run_dirs: list[Path], report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    summary = report["summary"]
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [f"{s['student']}/{s['method']}" for s in summary]
    x = np.arange(len(summary))
    for offset, metric in ((-0.2, "wa"), (0.2, "ua")):
        bars.bar(x + offset, [100 * s[f"{metric}_mean"] for s in summary], width=0.4,
                 yerr=[100 * s[f"{metric}_std"] for s in summary], capsize=4, label=metric.upper())
    bars.set_xticks(x, names, rotation=20, ha="right")
    bars.set_ylabel("% (mean ± std over folds)")
    bars.set_ylim(0, 100)
    bars.legend()
    bars.set_title("test WA / UA")
    for run_dir in map(Path, run_dirs):
        for file in sorted(run_dir.glob("*/results.json")):
            history = read_json(file).get("history") or []
            curves.plot([h["epoch"] for h in history], [100 * h["valid_ua"] for h in history],
                        label=f"{run_dir.name}/{file.parent.name}", alpha=0.8)
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation UA %")
    curves.set_title("model selection curves")
    if len(curves.get_lines()) <= 12:
        curves.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_with(out, lambda tmp: fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png"),
                      suffix=out.suffix)
    plt.close(fig)
