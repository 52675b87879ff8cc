"""Classification, calibration, targeting and regression metrics on numpy arrays."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (average_precision_score, brier_score_loss, log_loss,
                             precision_recall_curve, roc_auc_score, roc_curve)

EPS = 1e-7


def _as_arrays(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    return y, s


def auc(y_true, score) -> float:
    y, s = _as_arrays(y_true, score)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def defined_auc(y_true, score) -> float | None:
    """AUC, or None when one class is missing: written as JSON null, not as NaN, which strict
    JSON readers (browsers, jq) refuse."""
    value = auc(y_true, score)
    return None if np.isnan(value) else value


def reliability_curve(y_true, p, bins: int = 10) -> list[dict]:
    """Equal-width bins of predicted probability: mean prediction vs observed rate per bin."""
    y, p = _as_arrays(y_true, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    return [{"bin_low": float(edges[i]), "bin_high": float(edges[i + 1]), "count": int(counts[i]),
             "mean_predicted": float(sum_p[i] / counts[i]) if counts[i] else None,
             "observed_rate": float(sum_y[i] / counts[i]) if counts[i] else None}
            for i in range(bins)]


def expected_calibration_error(y_true, p, bins: int = 10) -> float:
    curve = reliability_curve(y_true, p, bins)
    n = sum(b["count"] for b in curve)
    return float(sum(b["count"] * abs(b["mean_predicted"] - b["observed_rate"])
                     for b in curve if b["count"]) / n)


def precision_recall_f1(y_true, predicted_positive) -> dict:
    y = np.asarray(y_true, dtype=bool).ravel()
    yhat = np.asarray(predicted_positive, dtype=bool).ravel()
    tp = float(np.sum(y & yhat))
    precision = tp / yhat.sum() if yhat.sum() else 0.0
    recall = tp / y.sum() if y.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted_positive": int(yhat.sum())}


def top_k_mask(score, percent: float) -> np.ndarray:
    """The ceil(percent% of n) highest scores (ties broken by position, so exactly k rows)."""
    s = np.asarray(score, dtype=np.float64).ravel()
    k = int(np.ceil(len(s) * percent / 100.0))
    mask = np.zeros(len(s), dtype=bool)
    mask[np.argsort(-s, kind="stable")[:k]] = True
    return mask


def lift_by_decile(y_true, score) -> list[dict]:
    """Deciles by descending score: buyer rate, lift over the overall rate, cumulative capture."""
    y, s = _as_arrays(y_true, score)
    order = np.argsort(-s, kind="stable")
    chunks = np.array_split(y[order], 10)
    base = y.mean() if y.mean() > 0 else EPS
    total = y.sum() if y.sum() > 0 else EPS
    out, captured = [], 0.0
    for i, chunk in enumerate(chunks):
        captured += chunk.sum()
        rate = float(chunk.mean()) if len(chunk) else 0.0
        out.append({"decile": i + 1, "rows": int(len(chunk)), "buyer_rate": rate,
                    "lift": rate / base, "cumulative_capture": float(captured / total)})
    return out


def spend_errors(actual, predicted) -> dict:
    a, p = _as_arrays(actual, predicted)
    err = p - a
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "bias": float(np.mean(err)), "actual_mean": float(a.mean()),
            "predicted_mean": float(p.mean())}


def classification_metrics(y_true, p, threshold: float = 0.5, top_k_percent: float = 10.0,
                           bins: int = 10) -> dict:
    """Every purchase-head metric of the evaluation report for one set of probabilities."""
    y, p = _as_arrays(y_true, p)
    clipped = np.clip(p, EPS, 1 - EPS)
    both_classes = 0 < y.sum() < len(y)
    return {
        "rows": int(len(y)), "positive_rate": float(y.mean()),
        "roc_auc": auc(y, p),
        "pr_auc": float(average_precision_score(y, p)) if both_classes else float("nan"),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, clipped)),
        "ece": expected_calibration_error(y, clipped, bins),
        "reliability": reliability_curve(y, clipped, bins),
        "at_threshold": {"threshold": threshold, **precision_recall_f1(y, p >= threshold)},
        "at_top_k": {"percent": top_k_percent, **precision_recall_f1(y, top_k_mask(p, top_k_percent))},
        "lift": lift_by_decile(y, p),
    }


def curves(y_true, score) -> dict:
    """ROC and PR curves (for plots), thinned to at most ~200 points."""
    y, s = _as_arrays(y_true, score)
    fpr, tpr, _ = roc_curve(y, s)
    precision, recall, _ = precision_recall_curve(y, s)

    def thin(a):
        step = max(1, len(a) // 200)
        return a[::step].tolist() + [a[-1].item()]
    return {"roc": {"fpr": thin(fpr), "tpr": thin(tpr)},
            "pr": {"recall": thin(recall), "precision": thin(precision)}}
