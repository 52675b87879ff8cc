"""The evaluation report: plots of every scorer, assembled by the shared HTML report builder."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from demandcast.html_report import HtmlReport  # noqa: E402


def roc_plot(curves: dict) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, c in curves.items():
        ax.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(fontsize=8)
    return fig


def pr_plot(curves: dict, base_rate: float) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, c in curves.items():
        ax.plot(c["pr"]["recall"], c["pr"]["precision"], label=name)
    ax.axhline(base_rate, color="k", ls=":", lw=1)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend(fontsize=8)
    return fig


def calibration_plot(results: dict) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, m in results.items():
        pts = [(b["mean_predicted"], b["observed_rate"]) for b in m["reliability"] if b["count"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{name} (ECE {m['ece']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed purchase rate", title="Reliability")
    ax.legend(fontsize=8)
    return fig


def lift_plot(results: dict) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, m in results.items():
        ax.plot([d["decile"] for d in m["lift"]], [d["lift"] for d in m["lift"]], marker="o", label=name)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set(xlabel="decile (highest scores first)", ylabel="lift", title="Lift by decile")
    ax.legend(fontsize=8)
    return fig


def importance_plot(importance: dict, title: str) -> plt.Figure:
    return barh_plot(importance, title)


def barh_plot(values: dict, title: str, xlabel: str = "", threshold: float | None = None,
              limit: int = 20) -> plt.Figure:
    """The `limit` largest values as horizontal bars, largest on top; bars above `threshold`
    (drawn as a dashed line) in red."""
    items = sorted(values.items(), key=lambda kv: kv[1])[-limit:]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1.2))
    colors = ["tab:red" if threshold is not None and v > threshold else "tab:blue" for _, v in items]
    ax.barh([str(k) for k, _ in items], [v for _, v in items], color=colors)
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set(title=title, xlabel=xlabel)
    return fig


def events_per_day_plot(daily: dict[str, tuple[list, list]]) -> plt.Figure:
    """Events per day, one line per event type: type -> (dates, counts)."""
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for name, (dates, counts) in daily.items():
        ax.plot(dates, counts, lw=1.2, label=name)
    ax.set(ylabel="events per day", title="Events per day by type", yscale="log")
    ax.legend(fontsize=8, ncol=3)
    fig.autofmt_xdate()
    return fig


def funnel_plot(steps: list[tuple[str, int]], title: str) -> plt.Figure:
    """Bars of a funnel, each labelled with its share of the previous step."""
    fig, ax = plt.subplots(figsize=(6, 3))
    names, counts = [s for s, _ in steps], [n for _, n in steps]
    bars = ax.bar(names, counts, color="tab:blue")
    for i, bar in enumerate(bars):
        share = "" if i == 0 or not counts[i - 1] else f"  {counts[i] / counts[i - 1]:.1%} of previous"
        ax.annotate(f"{counts[i]:,}{share}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set(title=title, yscale="log")
    return fig


def histograms_plot(samples: dict[str, dict[str, list[float]]], bins: int = 30) -> plt.Figure:
    """One panel per feature; each panel overlays its samples (label -> values) as densities on
    shared bin edges (1st to 99th percentile, so a long tail does not squash the bulk)."""
    import numpy as np

    n = max(1, len(samples))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, (feature, series) in zip(axes.flat, samples.items()):
        pooled = np.concatenate([np.asarray(v, dtype=float) for v in series.values()] or [np.zeros(0)])
        pooled = pooled[np.isfinite(pooled)]
        if pooled.size == 0:
            ax.set_title(f"{feature} (no values)", fontsize=9)
            continue
        low, high = np.percentile(pooled, [1, 99])
        edges = np.linspace(low, high if high > low else low + 1, bins + 1)
        for label, values in series.items():
            values = np.asarray(values, dtype=float)
            values = np.clip(values[np.isfinite(values)], edges[0], edges[-1])
            ax.hist(values, bins=edges, density=True, histtype="step" if label != next(iter(series))
                    else "stepfilled", alpha=0.6, lw=1.5, label=label)
        ax.set_title(feature, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(samples):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def training_curves_plot(history: list[dict]) -> plt.Figure:
    """Training loss (left) and validation AUC (right) per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("loss", "purchase_loss", "spend_loss", "category_loss"):
        if all(key in h for h in history):
            left.plot(epochs, [h[key] for h in history], marker="o", label=key)
    left.set(xlabel="epoch", title="Training loss")
    left.legend(fontsize=8)
    right.plot(epochs, [h["val_auc"] for h in history], marker="o", color="tab:green")
    right.set(xlabel="epoch", title="Validation ROC-AUC")
    fig.tight_layout()
    return fig


def scorer_rows(results: dict) -> list[dict]:
    rows = []
    for name, m in results.items():
        row = {"scorer": name, **{k: m[k] for k in ("roc_auc", "pr_auc", "log_loss", "brier", "ece")}}
        row.update({f"{k[0].upper()}@thr": m["at_threshold"][k] for k in ("precision", "recall", "f1")})
        row.update({f"{k[0].upper()}@top k%": m["at_top_k"][k] for k in ("precision", "recall")})
        row["lift decile 1"] = m["lift"][0]["lift"]
        rows.append(row)
    return rows


def html_report(report: dict, curves: dict) -> str:
    results = report["scorers"]
    model = results.get("wide_and_deep", next(iter(results.values())))
    page = HtmlReport(f"Evaluation of model {report['model_version']}",
                      f"Protocol: {report['protocol']}; test rows: {model['rows']}; purchase rate "
                      f"{model['positive_rate']:.4f}; threshold {report['threshold']}, "
                      f"top k = {report['top_k_percent']}%.")
    page.section("Scorers on the same test rows").table(scorer_rows(results))
    plots = page.section("Ranking and calibration")
    for fig in (roc_plot(curves), pr_plot(curves, model["positive_rate"]),
                calibration_plot(results), lift_plot(results)):
        plots.figure(fig, dpi=90)
    importance = page.section("Global feature importance")
    for name, imp in report.get("feature_importance", {}).items():
        if imp:
            importance.figure(importance_plot(imp, f"Feature importance: {name}"), dpi=90)
    details = {k: v for k, v in report.items() if k not in ("scorers", "feature_importance")}
    page.section("Details").table([{"key": k, "value": json.dumps(v, default=str)}
                                   for k, v in sorted(details.items())])
    return page.render()
