"""The model directory: write it once after training, read it for evaluation and scoring.

{runs_dir}/models/{model_version}/
  saved_model/        SavedModel; signature serving_default takes one 1-D tensor per raw column
  weights/            Keras weights (rebuild with the preprocessing state, e.g. for baselines)
  preprocessing.json  normalisation stats, vocabularies, crosses, label stats, calibration
  model.json          version, params, input columns, categories, resolved config, lineage, code
  metrics.json        validation metrics and the per-epoch history
  tensorboard/        training curves

Scoring relies only on `load_scoring_model(model_dir)` (docs/CONTRACTS.md).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from demandcast.errors import StageFailed
from training.preprocessing import STATE_FILE, input_columns, load_state, save_state

SAVED_MODEL = "saved_model"
WEIGHTS = "weights/model"
MODEL_JSON = "model.json"
METRICS_JSON = "metrics.json"
PREDICT_CHUNK = 65_536
# What a reader needs of a model directory: scoring only the SavedModel and model.json; evaluation
# also rebuilds the Keras model (baselines on its wide ids) from the weights and the state.
SCORING_FILES = (MODEL_JSON, f"{SAVED_MODEL}/saved_model.pb", f"{SAVED_MODEL}/variables/variables.index")
EVALUATION_FILES = (*SCORING_FILES, STATE_FILE, f"{WEIGHTS}.index")


def category_score_column(category_id: str) -> str:
    """Name of the predict() column holding P(buys category `category_id` in the window)."""
    return f"p_category_{category_id}"


def code_version() -> str:
    """Git commit of the code that trained (with -dirty), or $DEMANDCAST_CODE_VERSION on clusters."""
    if os.environ.get("DEMANDCAST_CODE_VERSION"):
        return os.environ["DEMANDCAST_CODE_VERSION"]
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "training", "demandcast",
                                "jobs"], cwd=root, capture_output=True, text=True, timeout=10).stdout
        return head + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _signature(state: dict):
    import tensorflow as tf

    spec = {c: tf.TensorSpec((None,), tf.float32, name=c) for c in state["numeric"]}
    spec.update({c: tf.TensorSpec((None,), tf.string, name=c) for c in state["categorical"]})
    return spec


def export_saved_model(model, state: dict, folder: Path) -> None:
    """A SavedModel that maps raw columns to calibrated outputs (no Python needed to serve)."""
    import tensorflow as tf

    from training.model import expected_spend, spend_scale

    scale = spend_scale(state)
    has_categories = bool(state["category_ids"])

    @tf.function(input_signature=[_signature(state)])
    def serve(features):
        out = model(features, training=False)
        result = {"p_purchase": out["p_purchase"], "logit": out["logit"],
                  "expected_spend": expected_spend(out["spend_log"], scale)}
        if has_categories:
            result["category_probs"] = tf.sigmoid(out["category_logits"])
        return result

    # The module tracks what `serve` uses, the variables and the lookup tables, not the Keras
    # model: saving a Keras model makes Keras trace every layer's call functions for metadata
    # that serving never reads (most of a small training run's export time).
    module = tf.Module()
    module.model_variables = list(model.variables)
    module.model_resources = [t for t in tf.train.TrackableView(model).descendants()
                              if isinstance(t, tf.saved_model.experimental.TrackableResource)]
    module.serve = serve
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve})


def save_model_dir(model, state: dict, model_dir: str | Path, info: dict, metrics: dict,
                   tensorboard_dir: str | Path | None = None) -> Path:
    """Writes the whole directory under a temporary name, then renames it (no half models)."""
    final = Path(model_dir)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_weights(str(tmp / WEIGHTS))
    export_saved_model(model, state, tmp / SAVED_MODEL)
    save_state(state, tmp)
    (tmp / MODEL_JSON).write_text(json.dumps(
        {**info, "input_columns": input_columns(state), "category_ids": state["category_ids"]},
        indent=1, sort_keys=True, default=str))
    (tmp / METRICS_JSON).write_text(json.dumps(metrics, indent=1, sort_keys=True, default=str))
    if tensorboard_dir and Path(tensorboard_dir).is_dir():
        shutil.copytree(tensorboard_dir, tmp / "tensorboard")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def missing_model_files(model_dir: str | Path, needed: tuple[str, ...]) -> list[str]:
    root = Path(str(model_dir).removeprefix("file://"))
    return [name for name in needed if not (root / name).is_file()]


def require_model_dir(model_dir: str | Path, needed: tuple[str, ...] = SCORING_FILES) -> None:
    """Refuses a missing or incomplete model directory (deleted, half copied) before TensorFlow
    fails on it deep inside a load."""
    missing = missing_model_files(model_dir, needed)
    remedy = "retrain (`demandcast train`) or pin another model (score/evaluate.model_version)"
    if len(missing) == len(needed):
        raise StageFailed(f"no model directory at {model_dir}; {remedy}")
    if missing:
        raise StageFailed(f"the model directory {model_dir} is incomplete (missing {missing}); {remedy}")


def load_failed(model_version: str, model_dir: str | Path, exc: BaseException) -> StageFailed:
    """One line for a directory whose files are there but unreadable (corrupt, wrong format)."""
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return StageFailed(f"cannot load model {model_version} from {model_dir} (corrupt or from "
                       f"another version?): {type(exc).__name__}: {first[:300]}; retrain it or pin "
                       "another model (score/evaluate.model_version)")


def read_model_info(model_dir: str | Path) -> dict:
    path = Path(model_dir) / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model directory (no {MODEL_JSON})")
    return json.loads(path.read_text())


def load_keras_model(model_dir: str | Path):
    """The Keras model rebuilt from the saved state and weights (calibration included)."""
    from training.model import ModelParams, build_model

    state = load_state(model_dir)
    params = ModelParams(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in read_model_info(model_dir)["params"].items()})
    model = build_model(state, params)
    model.load_weights(str(Path(model_dir) / WEIGHTS)).expect_partial()
    return model, state


def model_input_arrays(df: pd.DataFrame, columns: dict[str, str]) -> dict[str, np.ndarray]:
    """Raw pandas columns -> the arrays the model takes (float32 with NaN, str with "" for null)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"input is missing model columns {missing}; the model needs {sorted(columns)}")
    out = {}
    for name, kind in columns.items():
        if kind == "numeric":
            out[name] = pd.to_numeric(df[name], errors="coerce").to_numpy(np.float32, na_value=np.nan)
        else:
            values = df[name].astype(object)
            out[name] = values.where(values.notna(), "").astype(str).to_numpy(dtype=object)
    return out


@dataclass
class SavedModelScorer:
    """The SavedModel of a model directory as scoring and evaluation use it: raw columns in,
    calibrated predictions out (training.scoring.model_loading.ScoringModel)."""

    model_dir: str
    model_version: str
    input_columns: dict[str, str]
    category_ids: list[str]
    _serve: object

    @property
    def category_columns(self) -> list[str]:
        return [category_score_column(c) for c in self.category_ids]

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """p_purchase (calibrated), expected_spend and one p_category_<id> column per category."""
        import tensorflow as tf

        arrays = model_input_arrays(df, self.input_columns)
        parts = []
        for start in range(0, len(df), PREDICT_CHUNK) or [0]:
            chunk = {k: tf.constant(v[start:start + PREDICT_CHUNK]) for k, v in arrays.items()}
            parts.append({k: v.numpy() for k, v in self._serve(**chunk).items()})
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out = pd.DataFrame({"p_purchase": merged["p_purchase"].astype(np.float64),
                            "expected_spend": merged["expected_spend"].astype(np.float64)},
                           index=df.index)
        if self.category_ids:
            probs = merged["category_probs"].reshape(len(df), len(self.category_ids))
            for i, column in enumerate(self.category_columns):
                out[column] = probs[:, i].astype(np.float64)
        return out


def load_scoring_model(model_dir: str | Path) -> SavedModelScorer:
    """Loads the SavedModel of a model directory for batch prediction (see docs/CONTRACTS.md)."""
    import tensorflow as tf

    require_model_dir(model_dir, SCORING_FILES)
    info = read_model_info(model_dir)
    loaded = tf.saved_model.load(str(Path(model_dir) / SAVED_MODEL))
    serve = loaded.signatures["serving_default"]
    model = SavedModelScorer(str(model_dir), info["model_version"], dict(info["input_columns"]),
                             list(info["category_ids"]), serve)
    model._loaded = loaded  # keeps the restored variables alive as long as the model
    return model
