"""BG/NBD, Pareto/NBD and Gamma-Gamma: the fits recover the parameters of data drawn from the
models, refuse data that cannot identify them, and as features (features.families.btyd) they
are point in time: purchases on or after the snapshot change neither the sample, nor the
parameters, nor any user's values at that snapshot."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features import btyd_models as B
from features.families import btyd
from features.feature_spec import FeatureSpec
from features.window_sums import daily_rows_by_snapshot


def draw_bgnbd(n: int, r: float, alpha: float, a: float, b: float, seed: int = 0, future: int = 30):
    """Customers from the BG/NBD process itself: first purchase at 0, observed until T; and
    their purchase count in (T, T + future]."""
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    T = rng.integers(30, 365, n).astype(float)
    x, t_x, later = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i] + future:
                break
            if t <= T[i]:
                x[i], t_x[i] = x[i] + 1, t
            else:
                later[i] += 1
            if rng.random() < p[i]:
                break
    spend = rng.gamma(3.0, 10.0, n)
    return B.RFM.of(x, t_x, T, spend), later


def test_bgnbd_recovers_its_parameters_and_predicts_the_future_counts():
    rfm, later = draw_bgnbd(3000, r=0.5, alpha=20.0, a=0.7, b=3.0)
    fitted, refused = B.fit_all(rfm)
    assert refused == {}
    bg = fitted["bgnbd"]
    assert bg["r"] == pytest.approx(0.5, rel=0.15) and bg["alpha"] == pytest.approx(20, rel=0.25)
    predicted = B.predict_all(fitted, 30.0, rfm)
    # Unbiased on the whole and informative per customer, for both count models.
    for name in ("bgnbd_expected", "pareto_expected"):
        assert np.nanmean(predicted[name]) == pytest.approx(later.mean(), rel=0.15)
        assert np.corrcoef(predicted[name], later)[0, 1] > 0.4
    for name in ("bgnbd_p_alive", "pareto_p_alive"):
        assert ((predicted[name] >= 0) & (predicted[name] <= 1)).all()
    # One-purchase customers are alive for BG/NBD (no purchase after which to drop out).
    assert (predicted["bgnbd_p_alive"][rfm.x == 0] == 1.0).all()
    # Gamma-Gamma shrinks a customer's mean spend towards the population's.
    gg = B.gamma_gamma_mean_spend(fitted["gamma_gamma"], np.array([0.0, 50.0]), np.array([500.0, 500.0]))
    assert 30 < gg[0] < gg[1] < 500


def test_data_that_cannot_identify_the_models_is_refused_with_a_reason():
    one_purchase_each = B.RFM.of([0] * 50, [0] * 50, [40] * 50, [10.0] * 50)
    fitted, refused = B.fit_all(one_purchase_each)
    assert set(fitted) == {"gamma_gamma"}
    assert "0 customers with a repeat purchase day" in refused["bgnbd"]
    assert "3 customers" in B.fit_all(B.RFM.of([0, 1, 2], [0, 3, 4], [9, 9, 9]))[1]["pareto_nbd"]
    # Predictions of models not fitted are NaN, never an exception.
    assert np.isnan(B.predict_all(fitted, 30.0, one_purchase_each)["bgnbd_expected"]).all()


DAILY_SCHEMA = "user_key string, event_date date, purchases int, spend double"


def user_daily(spark, rows):
    return spark.createDataFrame(pd.DataFrame(rows, columns=["user_key", "event_date", "purchases", "spend"]),
                                 DAILY_SCHEMA)


def purchase_days(seed: int, users: int, start: dt.date, days: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        rate = rng.gamma(0.8, 0.03)
        for d in range(days):
            if rng.random() < rate:
                rows.append((f"u{u:03d}", start + dt.timedelta(days=d), 1, float(rng.gamma(2, 20))))
    return rows


def btyd_columns(spark, daily, snapshot: dt.date, spec: FeatureSpec, params=None) -> pd.DataFrame:
    params = params if params is not None else btyd.fit_parameters(daily, [snapshot], spec)
    rows = daily_rows_by_snapshot(daily, [snapshot])
    base = rows.select(*btyd.KEYS).distinct()
    return (btyd.add_btyd_features(base, rows, params, spec).toPandas()
            .sort_values("user_key").reset_index(drop=True))


@pytest.mark.slow
def test_features_at_a_snapshot_ignore_purchases_on_or_after_it(spark):
    start, snapshot = dt.date(2025, 1, 1), dt.date(2025, 7, 1)
    spec = FeatureSpec(btyd_fit_max_customers=40)
    history = purchase_days(1, 80, start, 180)
    daily = user_daily(spark, history)
    params = btyd.fit_parameters(daily, [snapshot], spec)
    assert set(params[snapshot]) == {"bgnbd", "pareto_nbd", "gamma_gamma"}
    before = btyd_columns(spark, daily, snapshot, spec, params)

    # A big spender buying every day from the snapshot on, and a customer new on the snapshot.
    after = [(u, snapshot + dt.timedelta(days=d), 5, 1000.0) for u in ("u000", "u001", "new")
             for d in range(60)]
    later = user_daily(spark, history + after)
    assert btyd.fit_parameters(later, [snapshot], spec) == params
    pd.testing.assert_frame_equal(btyd_columns(spark, later, snapshot, spec, params), before)

    names = [f.name for f in btyd.definitions(spec)]
    customers = before[before[names[0]].notna()]
    assert len(customers) > 50 and customers[names].notna().all().all()
    # The sample is bounded, yet every customer is scored.
    assert len(customers) > spec.btyd_fit_max_customers


def test_a_world_with_few_buyers_leaves_the_features_null(spark):
    snapshot = dt.date(2025, 3, 1)
    daily = user_daily(spark, [("a", dt.date(2025, 1, 5), 1, 10.0), ("b", dt.date(2025, 2, 1), 2, 5.0),
                               ("b", dt.date(2025, 2, 3), 1, 7.0), ("c", dt.date(2025, 1, 9), 0, 0.0)])
    features = btyd_columns(spark, daily, snapshot, FeatureSpec())
    assert len(features) == 3
    assert features[[f.name for f in btyd.definitions(FeatureSpec())]].isna().all().all()


def test_evaluate_scores_the_models_on_the_same_rows_and_says_when_it_cannot():
    from training.evaluation.btyd_baselines import btyd_columns, btyd_scores, expected_spend

    rng = np.random.default_rng(3)
    n = 2000
    expected = np.where(rng.random(n) < 0.3, np.nan, rng.gamma(0.7, 0.5, n))
    bought = (rng.random(n) < 1 - np.exp(-np.nan_to_num(expected, nan=0.05))).astype(int)
    names = btyd_columns(30)
    frame = pd.DataFrame({names["bgnbd"]: expected, names["pareto_nbd"]: expected * 1.1,
                          "days_since_last_purchase": rng.uniform(1, 100, n),
                          "btyd_expected_spend_next_30d": expected * 40, "label_purchased": bought})
    train, test = frame.iloc[:1000], frame.iloc[1000:].reset_index(drop=True)
    scores, skipped = btyd_scores(train, test, 30)
    assert skipped == {} and set(scores) == {"bgnbd", "pareto_nbd", "logistic_regression_rfm_btyd"}
    # Calibration keeps the model's ranking of its customers and gives probabilities.
    customers = test[names["bgnbd"]].notna().to_numpy()
    order = np.argsort(test[names["bgnbd"]].to_numpy()[customers])
    assert (np.diff(scores["bgnbd"][customers][order]) >= 0).all()
    assert ((scores["bgnbd"] > 0) & (scores["bgnbd"] < 1)).all()
    assert (expected_spend(test, 30)[~customers] == 0).all()

    without = test.drop(columns=[names["pareto_nbd"]])
    assert "not a model input" in btyd_scores(train, without, 30)[1]["pareto_nbd"]
    never_fitted = train.assign(**{names["bgnbd"]: np.nan})
    assert "null in every train row" in btyd_scores(never_fitted, test, 30)[1]["bgnbd"]
