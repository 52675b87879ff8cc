"""The run report's own figures: events per day, the funnel, feature histograms and the training
curves (the scorer figures are the evaluation report's)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
