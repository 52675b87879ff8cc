"""The "buy till you die" models of the field: BG/NBD, Pareto/NBD and Gamma-Gamma, fitted by
maximum likelihood and evaluated in closed form (numpy and scipy only, no Spark).

Why not a library: `lifetimes` 0.11.3 (the reference implementation these formulas follow) is
archived and unmaintained since 2020, fits through `autograd`, and its successors (`btyd`,
`pymc-marketing`) bring PyMC/PyTensor, far beyond the pinned stack. The likelihoods are short
and well documented, so they are written out here:

- BG/NBD: Fader, Hardie & Lee (2005), "Counting your customers the easy way", eq. 6 (likelihood),
  eq. 10 (conditional expectation) and the P(alive) of their note "Computing P(alive) using the
  BG/NBD model".
- Pareto/NBD: Schmittlein, Morrison & Colombo (1987); likelihood, P(alive) and conditional
  expectation as in Fader & Hardie (2005), "A note on deriving the Pareto/NBD model and related
  expressions".
- Gamma-Gamma: Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves", eq. 4-5.

Per customer: x = repeat purchase days (purchase days - 1), t_x = days from the first to the last
purchase day, T = days from the first purchase day to the snapshot, all before the snapshot. The
time unit is the day. Parameters are fitted on log scale (positivity) with L-BFGS-B, falling back
to Nelder-Mead, which copes with the likelihood's non-finite edges; a small L2 penalty on the
log parameters keeps them finite on worlds with few buyers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import expit, gammaln, hyp2f1, logsumexp

# Fewer customers than this (or no repeat buyer at all) and the fit is refused: the maximum
# likelihood runs to the boundary and the parameters mean nothing.
MIN_CUSTOMERS = 20
MIN_REPEAT_CUSTOMERS = 5
PENALTY = 1e-3


class FitRefused(ValueError):
    """The data cannot identify the model's parameters; the message says why."""


@dataclass(frozen=True)
class RFM:
    """One array per quantity, one entry per customer with at least one purchase day."""

    x: np.ndarray   # repeat purchase days
    t_x: np.ndarray  # first to last purchase day, days
    T: np.ndarray   # first purchase day to the snapshot, days
    mean_spend: np.ndarray  # mean spend per purchase day

    @classmethod
    def of(cls, x, t_x, T, mean_spend=None) -> "RFM":
        arrays = [np.asarray(a, dtype=np.float64) for a in (x, t_x, T)]
        spend = (np.asarray(mean_spend, dtype=np.float64) if mean_spend is not None
                 else np.full_like(arrays[0], np.nan))
        return cls(*arrays, spend)


def _check_sample(rfm: RFM, what: str) -> None:
    n, repeaters = len(rfm.x), int(np.sum(rfm.x > 0))
    if n < MIN_CUSTOMERS:
        raise FitRefused(f"{what}: {n} customers with a purchase before the snapshot "
                         f"(need at least {MIN_CUSTOMERS})")
    if repeaters < MIN_REPEAT_CUSTOMERS:
        raise FitRefused(f"{what}: {repeaters} customers with a repeat purchase day "
                         f"(need at least {MIN_REPEAT_CUSTOMERS})")


def _minimise(objective, start: np.ndarray, what: str) -> np.ndarray:
    def safe(log_params):
        with np.errstate(all="ignore"):
            value = objective(np.exp(log_params))
        return value if np.isfinite(value) else 1e300

    result = optimize.minimize(safe, np.log(start), method="L-BFGS-B")
    if not (result.success and result.fun < 1e299):
        # The gradient steps can stall on the likelihood's non-finite edges; the simplex copes.
        result = optimize.minimize(safe, np.log(start), method="Nelder-Mead",
                                   options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-10})
    params = np.exp(result.x)
    if not np.isfinite(result.fun) or result.fun >= 1e299 or not np.all(np.isfinite(params)):
        raise FitRefused(f"{what}: the likelihood did not converge ({result.message})")
    return params


# ---------------------------------------------------------------------------------- BG/NBD


def bgnbd_log_likelihood(params, x, t_x, T) -> np.ndarray:
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(t_x + alpha)
    top = np.maximum(a3, a4)
    return a1 + a2 + top + np.log(np.exp(a3 - top) + np.exp(a4 - top) * (x > 0))


def fit_bgnbd(rfm: RFM) -> dict:
    _check_sample(rfm, "BG/NBD")
    scale = max(float(np.mean(rfm.T)), 1.0)

    def objective(p):
        return -np.mean(bgnbd_log_likelihood(p, rfm.x, rfm.t_x, rfm.T)) + PENALTY * np.sum(np.log(p) ** 2)

    r, alpha, a, b = _minimise(objective, np.array([1.0, scale, 1.0, 1.0]), "BG/NBD")
    return {"r": r, "alpha": alpha, "a": a, "b": b}


def bgnbd_p_alive(params: dict, x, t_x, T) -> np.ndarray:
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    log_div = (r + x) * np.log((alpha + T) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


def bgnbd_expected_purchases(params: dict, t: float, x, t_x, T) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T]: Fader, Hardie & Lee (2005) eq. 10."""
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    ha, hb, hc = r + x, b + x, a + b + x - 1
    z = t / (alpha + T + t)
    with np.errstate(all="ignore"):
        log_hyp = np.log(hyp2f1(ha, hb, hc, z))
        # Euler's transformation where the series overflows.
        alt = np.log(hyp2f1(hc - ha, hc - hb, hc, z)) + (hc - ha - hb) * np.log1p(-z)
        log_hyp = np.where(np.isfinite(log_hyp), log_hyp, alt)
        numerator = (a + b + x - 1) / (a - 1) * (
            1 - np.exp(log_hyp + (r + x) * np.log((alpha + T) / (alpha + t + T))))
        denominator = 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        return numerator / denominator


# ------------------------------------------------------------------------------ Pareto/NBD


def _pareto_log_a0(params, x, t_x, T) -> np.ndarray:
    r, alpha, s, beta = params
    if alpha >= beta:
        low, high, second = beta, alpha, s + 1
    else:
        low, high, second = alpha, beta, r + x
    rsx = r + s + x
    gap = high - low
    p1 = hyp2f1(rsx, second, rsx + 1, gap / (high + t_x))
    p2 = hyp2f1(rsx, second, rsx + 1, gap / (high + T))
    q1, q2 = high + t_x, high + T
    sign = np.ones_like(np.asarray(x, dtype=np.float64))
    return (logsumexp([np.log(p1) + rsx * np.log(q2), np.log(p2) + rsx * np.log(q1)], axis=0,
                      b=[sign, -sign]) - rsx * np.log(q1 * q2))


def pareto_log_likelihood(params, x, t_x, T) -> np.ndarray:
    r, alpha, s, beta = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    a2 = np.logaddexp(-(r + x) * np.log(alpha + T) - s * np.log(beta + T),
                      np.log(s) + _pareto_log_a0(params, x, t_x, T) - np.log(r + s + x))
    return a1 + a2


def fit_pareto_nbd(rfm: RFM) -> dict:
    _check_sample(rfm, "Pareto/NBD")
    scale = max(float(np.mean(rfm.T)), 1.0)

    def objective(p):
        return -np.mean(pareto_log_likelihood(p, rfm.x, rfm.t_x, rfm.T)) + PENALTY * np.sum(np.log(p) ** 2)

    r, alpha, s, beta = _minimise(objective, np.array([1.0, scale, 1.0, scale]), "Pareto/NBD")
    return {"r": r, "alpha": alpha, "s": s, "beta": beta}


def pareto_p_alive(params: dict, x, t_x, T) -> np.ndarray:
    r, alpha, s, beta = params["r"], params["alpha"], params["s"], params["beta"]
    with np.errstate(all="ignore"):
        log_a0 = _pareto_log_a0((r, alpha, s, beta), x, t_x, T)
        return 1.0 / (1.0 + np.exp(np.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + T)
                                   + s * np.log(beta + T) + log_a0))


def pareto_expected_purchases(params: dict, t: float, x, t_x, T) -> np.ndarray:
    r, alpha, s, beta = params["r"], params["alpha"], params["s"], params["beta"]
    p = (r, alpha, s, beta)
    with np.errstate(all="ignore"):
        likelihood = pareto_log_likelihood(p, x, t_x, T)
        first = (gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
                 - (r + x) * np.log(alpha + T) - s * np.log(beta + T))
        second = np.log(r + x) + np.log(beta + T) - np.log(alpha + T)
        if abs(s - 1) < 1e-9:  # the limit s -> 1 of the expression below
            third = np.log(np.log((beta + T + t) / (beta + T)))
        else:
            third = np.log((1 - ((beta + T) / (beta + T + t)) ** (s - 1)) / (s - 1))
        return np.exp(first + second + third - likelihood)


# ----------------------------------------------------------------------------- Gamma-Gamma


def fit_gamma_gamma(rfm: RFM) -> dict:
    """On customers with a positive mean spend; n = purchase days (x + 1) transactions each."""
    keep = np.isfinite(rfm.mean_spend) & (rfm.mean_spend > 0)
    n, m = rfm.x[keep] + 1, rfm.mean_spend[keep]
    if len(n) < MIN_CUSTOMERS:
        raise FitRefused(f"Gamma-Gamma: {len(n)} customers with a positive spend (need at least "
                         f"{MIN_CUSTOMERS})")

    def objective(params):
        p, q, v = params
        ll = (gammaln(p * n + q) - gammaln(p * n) - gammaln(q) + q * np.log(v)
              + (p * n - 1) * np.log(m) + p * n * np.log(n) - (p * n + q) * np.log(n * m + v))
        return -np.mean(ll) + PENALTY * np.sum(np.log(params) ** 2)

    p, q, v = _minimise(objective, np.array([1.0, 2.0, float(np.mean(m))]), "Gamma-Gamma")
    if q <= 1:
        raise FitRefused(f"Gamma-Gamma: fitted q={q:.3g} <= 1, the population mean spend is "
                         "undefined")
    return {"p": p, "q": q, "v": v}


def gamma_gamma_mean_spend(params: dict, x, mean_spend) -> np.ndarray:
    """E[spend per purchase day | n = x + 1 purchase days with mean `mean_spend`]."""
    p, q, v = params["p"], params["q"], params["v"]
    n = np.asarray(x, dtype=np.float64) + 1
    weight = p * n / (p * n + q - 1)
    return (1 - weight) * (v * p / (q - 1)) + weight * np.nan_to_num(mean_spend, nan=0.0)


# ------------------------------------------------------------------------- all of them


MODELS = {"bgnbd": fit_bgnbd, "pareto_nbd": fit_pareto_nbd, "gamma_gamma": fit_gamma_gamma}


def fit_all(rfm: RFM) -> tuple[dict, dict]:
    """(parameters per fitted model, reason per model that could not be fitted)."""
    fitted, refused = {}, {}
    for name, fit in MODELS.items():
        try:
            fitted[name] = {k: float(v) for k, v in fit(rfm).items()}
        except FitRefused as reason:
            refused[name] = str(reason)
    return fitted, refused


def predict_all(params: dict, t: float, rfm: RFM) -> dict[str, np.ndarray]:
    """Expected purchase days in the next `t` days and P(alive) under each fitted model, and the
    expected spend (BG/NBD count x Gamma-Gamma mean); NaN where a model is missing or its value
    is not finite."""
    nan = np.full(len(rfm.x), np.nan)
    out = {k: nan for k in ("bgnbd_expected", "bgnbd_p_alive", "pareto_expected",
                            "pareto_p_alive", "expected_spend")}
    with np.errstate(all="ignore"):
        if "bgnbd" in params:
            out["bgnbd_expected"] = bgnbd_expected_purchases(params["bgnbd"], t, rfm.x, rfm.t_x, rfm.T)
            out["bgnbd_p_alive"] = bgnbd_p_alive(params["bgnbd"], rfm.x, rfm.t_x, rfm.T)
        if "pareto_nbd" in params:
            out["pareto_expected"] = pareto_expected_purchases(params["pareto_nbd"], t, rfm.x, rfm.t_x, rfm.T)
            out["pareto_p_alive"] = pareto_p_alive(params["pareto_nbd"], rfm.x, rfm.t_x, rfm.T)
        if "bgnbd" in params and "gamma_gamma" in params:
            out["expected_spend"] = out["bgnbd_expected"] * gamma_gamma_mean_spend(
                params["gamma_gamma"], rfm.x, rfm.mean_spend)
    return {k: np.where(np.isfinite(v), v, np.nan) for k, v in out.items()}
