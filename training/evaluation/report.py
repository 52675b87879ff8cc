"""The evaluation report: ROC, precision-recall, reliability and lift of every scorer on the same
test rows, the metrics table and the feature importances, as one HTML page.

The run report draws the same figures from the evaluation's files."""
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
    # Reports written before the test rows were bounded have no statement of them.
    rows = report.get("test_rows", {}).get("statement", f"test rows: {model['rows']}")
    page = HtmlReport(f"Evaluation of model {report['model_version']}",
                      f"Protocol: {report['protocol']}; metrics {rows}; purchase rate "
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
            importance.figure(barh_plot(imp, f"Feature importance: {name}"), dpi=90)
    details = {k: v for k, v in report.items() if k not in ("scorers", "feature_importance")}
    page.section("Details").table([{"key": k, "value": json.dumps(v, default=str)}
                                   for k, v in sorted(details.items())])
    return page.render()
