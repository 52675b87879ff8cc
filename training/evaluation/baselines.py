"""Baselines on the same features as the model: recency rule, logistic regression over the wide
part's one-hot ids (the same vocabularies, buckets and hashed crosses), and LightGBM."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from training.model import WIDE_PREFIX
from training.model_directory import model_input_arrays


def recency_scores(df: pd.DataFrame, feature: str) -> np.ndarray:
    """Fewer days since the last purchase = likelier to buy; never bought ranks last."""
    values = pd.to_numeric(df[feature], errors="coerce").to_numpy(np.float64)
    return np.where(np.isnan(values), -np.inf, -values)


class WideIds:
    """The integer ids feeding each wide-part weight table, from the trained Keras model."""

    def __init__(self, keras_model, state: dict):
        import tensorflow as tf

        layers = [l for l in keras_model.layers if l.name.startswith(WIDE_PREFIX)
                  and isinstance(l, tf.keras.layers.Embedding)]
        self.sizes = [int(l.input_dim) for l in layers]
        self.names = [l.name[len(WIDE_PREFIX):] for l in layers]
        self._ids = tf.keras.Model(keras_model.inputs, [l.input for l in layers])
        self._columns = {**{c: "numeric" for c in state["numeric"]},
                         **{c: "categorical" for c in state["categorical"]}}

    def one_hot(self, df: pd.DataFrame) -> sparse.csr_matrix:
        import tensorflow as tf

        arrays = {k: tf.constant(v) for k, v in model_input_arrays(df, self._columns).items()}
        ids = [np.asarray(t).reshape(-1) for t in self._ids(arrays)]
        offsets = np.cumsum([0] + self.sizes[:-1])
        cols = np.stack([i.astype(np.int64) + o for i, o in zip(ids, offsets)], axis=1)
        rows = np.repeat(np.arange(len(df)), cols.shape[1])
        data = np.ones(cols.size, dtype=np.float32)
        return sparse.csr_matrix((data, (rows, cols.ravel())), shape=(len(df), int(sum(self.sizes))))


def logistic_regression(wide: WideIds, train: pd.DataFrame, label: str = "label_purchased"):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=2000, solver="liblinear")
    model.fit(wide.one_hot(train), train[label].to_numpy())
    return lambda df: model.predict_proba(wide.one_hot(df))[:, 1]


def lightgbm_frame(df: pd.DataFrame, state: dict) -> pd.DataFrame:
    """Numerics as they are; categoricals as pandas categories over the model's vocabularies."""
    out = {c: pd.to_numeric(df[c], errors="coerce").astype(np.float64) for c in sorted(state["numeric"])}
    for c in sorted(state["categorical"]):
        out[c] = pd.Categorical(df[c], categories=state["categorical"][c]["vocabulary"])
    return pd.DataFrame(out, index=df.index)


def lightgbm(train: pd.DataFrame, validation: pd.DataFrame, state: dict, rounds: int, seed: int,
             label: str = "label_purchased"):
    import lightgbm as lgb

    model = lgb.LGBMClassifier(n_estimators=rounds, learning_rate=0.05, num_leaves=31,
                               min_child_samples=20, subsample=0.8, subsample_freq=1,
                               colsample_bytree=0.9, random_state=seed, verbose=-1, n_jobs=2)
    model.fit(lightgbm_frame(train, state), train[label],
              eval_set=[(lightgbm_frame(validation, state), validation[label])],
              eval_metric="auc", callbacks=[lgb.early_stopping(30, verbose=False)])
    importance = dict(zip(model.booster_.feature_name(),
                          model.booster_.feature_importance("gain").tolist()))
    return (lambda df: model.predict_proba(lightgbm_frame(df, state))[:, 1]), importance
