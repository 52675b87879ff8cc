"""Wide & Deep (Cheng et al., 2016) over raw columns, with its preprocessing as layers.

The model takes one raw tensor per feature column (float32 numerics, string categoricals) and
builds every transform from the saved preprocessing state, so a SavedModel scores raw rows.

- wide: a linear model over one-hot categorical ids, numeric quantile buckets and hashed crosses
  (embeddings of width 1 summed, plus a bias started at the log-odds of the base rate).
- deep: embeddings of the categorical ids and the normalised numerics into an MLP (ReLU,
  dropout, L2).
- heads: purchase logit = wide + deep (calibrated by Platt scaling into p_purchase), expected
  spend (log link, Poisson loss) and per-category purchase logits for the top-K categories.
- with `ensemble_members` k > 1 the deep part is k independent MLPs (with their own heads) over
  the shared embeddings and wide part, each trained on its own loss; the outputs are the means of
  the members' (TabM-naive, Gorishniy et al., 2024), the members' own ones are `member_*`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

WIDE_PREFIX = "wide_"
SPEND_LOG_CLIP = 20.0
# Layers that keep float32 under a mixed_float16 policy: the preprocessing of raw values (float16
# turns a value above 65504 into infinity and keeps only ~3 significant digits), the wide part
# and every output, so the losses and calibrated probabilities are float32. Only the deep part's
# categorical embeddings and MLP compute in the global policy's dtype.
FLOAT32 = "float32"


def logit(p: float, eps: float = 1e-4) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class ModelParams:
    embedding_dim: int = 8
    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    l2: float = 1e-5
    # Models saved before ensembles existed have no such key and load with one member.
    ensemble_members: int = 1

    @classmethod
    def from_settings(cls, settings) -> "ModelParams":
        return cls(settings.embedding_dim, tuple(settings.hidden_units), settings.dropout, settings.l2,
                   settings.ensemble_members)


class NumericFeature(tf.keras.layers.Layer):
    """signed log1p, standardise with the train statistics; nulls (NaN) become the mean (0).

    Returns (normalised, bucket, missing). With `missing_bucket`, a null gets a bucket of its own
    (the last id) instead of the mean's: "never bought" is not an average recency.
    """

    def __init__(self, mean: float, std: float, boundaries: list[float],
                 missing_bucket: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std, self.boundaries = float(mean), float(std), list(boundaries)
        self.missing_bucket = bool(missing_bucket)

    @property
    def n_buckets(self) -> int:
        return len(self.boundaries) + 1 + int(self.missing_bucket)

    def call(self, x):
        x = tf.cast(x, tf.float32)  # built with dtype float32: never autocast to float16 first
        transformed = tf.sign(x) * tf.math.log1p(tf.abs(x))
        missing = tf.logical_not(tf.math.is_finite(transformed))
        transformed = tf.where(missing, self.mean, transformed)
        normalised = (transformed - self.mean) / self.std
        bucket = tf.raw_ops.Bucketize(input=transformed, boundaries=self.boundaries)
        if self.missing_bucket:
            bucket = tf.where(missing, len(self.boundaries) + 1, bucket)
        return normalised, bucket, tf.cast(missing, tf.float32)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std,
                "boundaries": self.boundaries, "missing_bucket": self.missing_bucket}


class PiecewiseLinearEmbedding(tf.keras.layers.Layer):
    """Numerics -> per-feature embeddings from a piecewise-linear encoding of quantile bins.

    Gorishniy et al., 2022 ("On Embeddings for Numerical Features in Tabular Deep Learning",
    PLE-Q): with bin edges b_0 < ... < b_T from train quantiles, x becomes T numbers, 1 for every
    bin below x, the position of x inside its own bin, 0 above; a linear map per feature (+ ReLU)
    turns them into a d-dimensional embedding. An MLP on these learns step- and threshold-like
    functions of each feature, which is what trees get for free.
    Input: [batch, features] standardised values and [batch, features] null flags (1 = null); `edges`: one ascending list per feature (features
    with fewer distinct quantiles get fewer bins; the padding bins encode to 0).
    """

    def __init__(self, edges: list[list[float]], dim: int, regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.edges, self.dim, self.regularizer = [list(e) for e in edges], int(dim), regularizer
        n_bins = max(1, max(len(e) - 1 for e in self.edges))
        left = [[0.0] * n_bins for _ in self.edges]
        width = [[1.0] * n_bins for _ in self.edges]
        mask = [[0.0] * n_bins for _ in self.edges]
        for f, e in enumerate(self.edges):
            for t in range(len(e) - 1):
                left[f][t], width[f][t], mask[f][t] = e[t], max(e[t + 1] - e[t], 1e-9), 1.0
        self._left, self._width, self._mask = (tf.constant(v, tf.float32) for v in (left, width, mask))
        self.n_bins = n_bins

    def build(self, input_shape):
        n = len(self.edges)
        self.kernel = self.add_weight(name="kernel", shape=(n, self.n_bins, self.dim),
                                      initializer="glorot_uniform", regularizer=self.regularizer)
        self.bias = self.add_weight(name="bias", shape=(n, self.dim), initializer="zeros")
        self.missing = self.add_weight(name="missing", shape=(n, self.dim), initializer="zeros")

    def call(self, inputs):
        x, missing = inputs
        present = (1.0 - missing)[:, :, None]
        encoded = tf.clip_by_value((x[:, :, None] - self._left) / self._width, 0.0, 1.0) * self._mask
        # A null encodes to zeros and gets its own learned vector per feature instead.
        embedded = (tf.einsum("bft,ftd->bfd", encoded * present, self.kernel) + self.bias
                    + (1.0 - present) * self.missing)
        return tf.reshape(tf.nn.relu(embedded), (-1, len(self.edges) * self.dim))

    def get_config(self):
        return {**super().get_config(), "edges": self.edges, "dim": self.dim}


class EnsembleDense(tf.keras.layers.Layer):
    """k independent dense layers in one op: [batch, in] (shared input) or [batch, k, in] ->
    [batch, k, units]. Each member's kernel is Glorot-uniform for its own (in, units) shape."""

    def __init__(self, members: int, units: int, activation=None, use_bias: bool = True,
                 kernel_regularizer=None, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.members, self.units, self.use_bias = int(members), int(units), bool(use_bias)
        self.activation = tf.keras.activations.get(activation)
        self.kernel_regularizer = kernel_regularizer
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        limit = math.sqrt(6.0 / (fan_in + self.units))
        self.kernel = self.add_weight(
            name="kernel", shape=(self.members, fan_in, self.units), regularizer=self.kernel_regularizer,
            initializer=lambda shape, dtype=None: tf.random.uniform(shape, -limit, limit, dtype or tf.float32))
        if self.use_bias:
            # The bias initializer sees one member's shape (e.g. a Constant of per-category rates).
            self.bias = self.add_weight(
                name="bias", shape=(self.members, self.units),
                initializer=lambda shape, dtype=None: tf.tile(
                    tf.reshape(self.bias_initializer((self.units,), dtype), (1, -1)), (self.members, 1)))

    def call(self, x):
        pattern = "bi,kio->bko" if x.shape.rank == 2 else "bki,kio->bko"
        y = tf.einsum(pattern, x, self.kernel)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def get_config(self):
        return {**super().get_config(), "members": self.members, "units": self.units,
                "use_bias": self.use_bias}


class MemberMean(tf.keras.layers.Layer):
    """[batch, k, ...] -> [batch, ...]: the ensemble's output is its members' mean."""

    def call(self, x):
        return tf.reduce_mean(x, axis=1)


class HashedCross(tf.keras.layers.Layer):
    """Hashes a tuple of integer ids into one of `buckets` (stable FarmHash fingerprint)."""

    def __init__(self, buckets: int, **kwargs):
        super().__init__(**kwargs)
        self.buckets = int(buckets)

    def call(self, ids):
        joined = tf.strings.reduce_join(
            tf.stack([tf.strings.as_string(tf.cast(i, tf.int64)) for i in ids], axis=-1),
            axis=-1, separator="x")
        return tf.strings.to_hash_bucket_fast(joined, self.buckets)

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets}


class PlattCalibration(tf.keras.layers.Layer):
    """p = sigmoid(a * logit + b); a and b are fitted on validation rows after training."""

    def build(self, input_shape):
        self.a = self.add_weight(name="a", shape=(), initializer="ones", trainable=False)
        self.b = self.add_weight(name="b", shape=(), initializer="zeros", trainable=False)

    def call(self, logits):
        return tf.sigmoid(self.a * logits + self.b)


def build_model(state: dict, params: ModelParams) -> tf.keras.Model:
    """The Wide & Deep model for one preprocessing state (see the module docstring)."""
    # Sorted, so the layer order (and the checkpoint layout) never depends on JSON key order.
    numeric = {c: state["numeric"][c] for c in sorted(state["numeric"])}
    categorical = {c: state["categorical"][c] for c in sorted(state["categorical"])}
    n_categories = len(state["category_ids"])
    labels = state["labels"]
    regularizer = tf.keras.regularizers.l2(params.l2) if params.l2 else None

    inputs = {c: tf.keras.Input(shape=(), dtype=tf.float32, name=c) for c in numeric}
    inputs.update({c: tf.keras.Input(shape=(), dtype=tf.string, name=c) for c in categorical})

    ids: dict[str, tf.Tensor] = {}      # feature -> integer id (vocab index or bucket)
    sizes: dict[str, int] = {}
    # States written before null flags existed (no "numeric_missing") build the older model.
    flag_missing = bool(state.get("numeric_missing"))
    dense_parts, normalised_columns, missing_columns = [], [], []
    for name, stats in numeric.items():
        layer = NumericFeature(stats["mean"], stats["std"], stats["boundaries"], flag_missing,
                               name=f"num_{name}", dtype=FLOAT32)
        normalised, bucket, missing = layer(inputs[name])
        normalised_columns.append(tf.keras.layers.Reshape((1,), dtype=FLOAT32)(normalised))
        missing_columns.append(tf.keras.layers.Reshape((1,), dtype=FLOAT32)(missing))
        ids[name], sizes[name] = bucket, layer.n_buckets

    def stacked(columns, name):
        return (tf.keras.layers.Concatenate(name=name, dtype=FLOAT32)(columns) if len(columns) > 1
                else columns[0])

    if numeric:
        numerics, nulls = stacked(normalised_columns, "numeric_normalised"), None
        dense_parts.append(numerics)
        if flag_missing:
            nulls = stacked(missing_columns, "numeric_missing")
            dense_parts.append(nulls)
        # Piecewise-linear embeddings of the numerics, when the state has their quantile bin
        # edges (moved to the standardised scale, the values the layer receives).
        if all(stats.get("embedding_edges") for stats in numeric.values()):
            nulls = nulls if nulls is not None else stacked(missing_columns, "numeric_missing")
            edges = [[(e - s["mean"]) / s["std"] for e in s["embedding_edges"]]
                     for s in numeric.values()]
            dense_parts.append(PiecewiseLinearEmbedding(edges, params.embedding_dim, regularizer,
                                                        name="numeric_embeddings",
                                                        dtype=FLOAT32)([numerics, nulls]))
    for name, spec in categorical.items():
        vocabulary = spec["vocabulary"] or ["<no frequent value>"]
        lookup = tf.keras.layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1,
                                              name=f"vocab_{name}")
        ids[name], sizes[name] = lookup(inputs[name]), len(vocabulary) + 1

    # Wide: one weight per id of every feature and cross, summed into one logit.
    wide_terms = []
    for name, index in ids.items():
        wide_terms.append(tf.keras.layers.Embedding(sizes[name], 1, embeddings_initializer="zeros",
                                                    name=f"{WIDE_PREFIX}{name}", dtype=FLOAT32)(index))
    for cross in state["crosses"]:
        label = "_x_".join(cross)
        hashed = HashedCross(state["cross_hash_buckets"], name=f"cross_{label}")([ids[c] for c in cross])
        wide_terms.append(tf.keras.layers.Embedding(state["cross_hash_buckets"], 1,
                                                    embeddings_initializer="zeros", dtype=FLOAT32,
                                                    name=f"{WIDE_PREFIX}cross_{label}")(hashed))
    wide_sum = (tf.keras.layers.Add(name="sum_of_wide_terms", dtype=FLOAT32)(wide_terms)
                if len(wide_terms) > 1 else wide_terms[0])
    # Class imbalance: the bias starts at the base rate's log-odds, so training starts calibrated.
    wide_logit = tf.keras.layers.Dense(
        1, name=f"{WIDE_PREFIX}bias", kernel_initializer="ones", trainable=True, dtype=FLOAT32,
        bias_initializer=tf.keras.initializers.Constant(logit(labels["base_rate"])))(wide_sum)

    # Deep: embeddings + normalised numerics -> MLP.
    for name in categorical:
        dim = min(params.embedding_dim, max(2, int(round(sizes[name] ** 0.5 * 2))))
        emb = tf.keras.layers.Embedding(sizes[name], dim, embeddings_regularizer=regularizer,
                                        name=f"emb_{name}")(ids[name])
        dense_parts.append(emb)
    hidden = tf.keras.layers.Concatenate(name="deep_input")(dense_parts) if len(dense_parts) > 1 \
        else dense_parts[0]
    category_bias = tf.keras.initializers.Constant([logit(r) for r in labels["category_rates"]])
    if params.ensemble_members > 1:
        return _ensemble_model(inputs, hidden, wide_logit, n_categories, category_bias, params,
                               regularizer)
    for i, units in enumerate(params.hidden_units):
        hidden = tf.keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer,
                                       name=f"deep_{i}")(hidden)
        if params.dropout:
            hidden = tf.keras.layers.Dropout(params.dropout, name=f"dropout_{i}")(hidden)
    deep_logit = tf.keras.layers.Dense(1, use_bias=False, name="deep_logit", dtype="float32")(hidden)
    purchase_logit = tf.keras.layers.Reshape((), name="logit", dtype=FLOAT32)(
        tf.keras.layers.Add(dtype=FLOAT32)([wide_logit, deep_logit]))

    spend_log = tf.keras.layers.Reshape((), name="spend_log", dtype=FLOAT32)(
        tf.keras.layers.Dense(1, name="spend_head", dtype="float32")(hidden))
    outputs = {
        "logit": purchase_logit,
        "p_purchase": PlattCalibration(name="calibration", dtype=FLOAT32)(purchase_logit),
        "spend_log": spend_log,
    }
    if n_categories:
        outputs["category_logits"] = tf.keras.layers.Dense(
            n_categories, name="category_head", dtype="float32",
            bias_initializer=category_bias)(hidden)
    return tf.keras.Model(inputs=inputs, outputs=outputs, name="wide_and_deep")


def _ensemble_model(inputs, deep_input, wide_logit, n_categories, category_bias, params,
                    regularizer) -> tf.keras.Model:
    """k MLP members over one deep input; outputs are member means, `member_*` the members'."""
    k = params.ensemble_members
    hidden = deep_input
    for i, units in enumerate(params.hidden_units):
        hidden = EnsembleDense(k, units, "relu", kernel_regularizer=regularizer, name=f"deep_{i}")(hidden)
        if params.dropout:
            # Element-wise, so every member draws its own mask.
            hidden = tf.keras.layers.Dropout(params.dropout, name=f"dropout_{i}")(hidden)
    squeeze = lambda name: tf.keras.layers.Reshape((k,), name=name, dtype=FLOAT32)
    deep_logits = squeeze("deep_logits")(EnsembleDense(k, 1, use_bias=False, name="deep_logit",
                                                       dtype=FLOAT32)(hidden))
    member_logits = tf.keras.layers.Add(name="member_logits", dtype=FLOAT32)([wide_logit, deep_logits])
    member_spend = squeeze("member_spend_log")(EnsembleDense(k, 1, name="spend_head",
                                                             dtype=FLOAT32)(hidden))
    purchase_logit = MemberMean(name="logit", dtype=FLOAT32)(member_logits)
    outputs = {
        "logit": purchase_logit,
        "p_purchase": PlattCalibration(name="calibration", dtype=FLOAT32)(purchase_logit),
        "spend_log": MemberMean(name="spend_log", dtype=FLOAT32)(member_spend),
        "member_logits": member_logits,
        "member_spend_log": member_spend,
    }
    if n_categories:
        member_categories = EnsembleDense(k, n_categories, bias_initializer=category_bias,
                                          name="category_head", dtype=FLOAT32)(hidden)
        outputs["member_category_logits"] = member_categories
        outputs["category_logits"] = MemberMean(name="category_logits", dtype=FLOAT32)(member_categories)
    return tf.keras.Model(inputs=inputs, outputs=outputs, name="wide_and_deep")


def wide_and_deep_variables(model: tf.keras.Model) -> tuple[list[tf.Variable], list[tf.Variable]]:
    """Trainable variables of the wide part (FTRL/Adam) and of the deep part (Adam)."""
    wide, deep = [], []
    for layer in model.layers:
        target = wide if layer.name.startswith(WIDE_PREFIX) else deep
        target.extend(layer.trainable_variables)
    return wide, deep


def expected_spend(spend_log: tf.Tensor, spend_scale: float) -> tf.Tensor:
    """Spend head output in currency: scale * exp(z) (log link; scale = mean train spend)."""
    return spend_scale * tf.exp(tf.minimum(spend_log, SPEND_LOG_CLIP))


def spend_scale(state: dict) -> float:
    return max(state["labels"]["spend_mean"], 1e-6)
