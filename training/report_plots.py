"""The evaluation report: one self-contained HTML file with embedded PNG plots."""
from __future__ import annotations

import base64
import html
import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def roc_plot(curves: dict) -> str:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, c in curves.items():
        ax.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(fontsize=8)
    return _png(fig)


def pr_plot(curves: dict, base_rate: float) -> str:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, c in curves.items():
        ax.plot(c["pr"]["recall"], c["pr"]["precision"], label=name)
    ax.axhline(base_rate, color="k", ls=":", lw=1)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend(fontsize=8)
    return _png(fig)


def calibration_plot(results: dict) -> str:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, m in results.items():
        pts = [(b["mean_predicted"], b["observed_rate"]) for b in m["reliability"] if b["count"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{name} (ECE {m['ece']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed purchase rate", title="Reliability")
    ax.legend(fontsize=8)
    return _png(fig)


def lift_plot(results: dict) -> str:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, m in results.items():
        ax.plot([d["decile"] for d in m["lift"]], [d["lift"] for d in m["lift"]], marker="o", label=name)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set(xlabel="decile (highest scores first)", ylabel="lift", title="Lift by decile")
    ax.legend(fontsize=8)
    return _png(fig)


def importance_plot(importance: dict, title: str) -> str:
    items = sorted(importance.items(), key=lambda kv: kv[1])[-20:]
    fig, ax = plt.subplots(figsize=(5, 0.3 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(title=title)
    return _png(fig)


def _table(results: dict) -> str:
    keys = ["roc_auc", "pr_auc", "log_loss", "brier", "ece"]
    head = "".join(f"<th>{k}</th>" for k in ["scorer", *keys, "P@thr", "R@thr", "F1@thr",
                                            "P@top k%", "R@top k%", "lift decile 1"])
    rows = []
    for name, m in results.items():
        cells = [f"{m[k]:.4f}" for k in keys]
        cells += [f"{m['at_threshold'][k]:.3f}" for k in ("precision", "recall", "f1")]
        cells += [f"{m['at_top_k'][k]:.3f}" for k in ("precision", "recall")]
        cells.append(f"{m['lift'][0]['lift']:.2f}")
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def html_report(report: dict, curves: dict) -> str:
    results = report["scorers"]
    model = results.get("wide_and_deep", next(iter(results.values())))
    images = [roc_plot(curves), pr_plot(curves, model["positive_rate"]),
              calibration_plot(results), lift_plot(results)]
    for name, imp in report.get("feature_importance", {}).items():
        if imp:
            images.append(importance_plot(imp, f"Feature importance: {name}"))
    figures = "".join(f'<img src="data:image/png;base64,{i}"/>' for i in images)
    details = html.escape(json.dumps({k: v for k, v in report.items() if k != "scorers"},
                                     indent=1, default=str))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>demandcast evaluation {html.escape(report['model_version'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{margin:6px}}</style></head>
<body><h1>Evaluation of model {html.escape(report['model_version'])}</h1>
<p>Protocol: <b>{html.escape(report['protocol'])}</b>; test rows: {model['rows']};
purchase rate {model['positive_rate']:.4f}; threshold {report['threshold']},
top k = {report['top_k_percent']}%.</p>
{_table(results)}
<div>{figures}</div>
<h2>Details</h2><pre>{details}</pre></body></html>"""
