"""MLflow, when `mlflow.tracking_uri` is set: train and evaluate log their parameters, per-epoch
metrics, evaluation JSON and HTML report and the model (a pyfunc around the model directory),
register it, and promotion moves the champion alias. The models Delta table stays the record;
each registered version carries the models table's version in the tag below.

The client is mlflow-skinny (constraints.txt); mlflow is imported here only when it is used.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from demandcast.errors import StageFailed
from demandcast.logs import get_logger
from demandcast.settings.tracking import MlflowSettings

log = get_logger("training.tracking")

VERSION_TAG = "demandcast.model_version"
MODEL_DIR_ARTIFACT = "model_dir"
# The model's run-time needs, stated so that MLflow does not infer them by loading the model in
# a subprocess (slow, and a guess).
PIP_REQUIREMENTS = ["tensorflow-cpu==2.15.1", "keras==2.15.0", "numpy==1.26.4", "pandas==2.2.3"]
# The pyfunc, logged as code (no pickle in the registry).
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def _client(settings: MlflowSettings):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri)


def _flat(prefix: str, value, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
    return out


def log_training(settings: MlflowSettings, model_version: str, model_dir: str, params: dict,
                 metrics: dict) -> dict[str, str]:
    """One run: `params` flattened (train.*, training_set.*), every epoch's numbers of
    `metrics['history']` at step=epoch, the validation metrics, the model (pyfunc) registered as
    a new version of mlflow.registered_model. Returns the run id and registered version."""
    import mlflow

    client = _client(settings)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name=model_version, tags={VERSION_TAG: model_version}) as run:
        mlflow.log_params(_flat("", params, {}))
        for record in metrics.get("history", []):
            step = int(record.get("epoch", 0))
            mlflow.log_metrics({k: float(v) for k, v in record.items()
                                if k != "epoch" and isinstance(v, (int, float))}, step=step)
        validation = metrics.get("validation", {}).get("calibrated", {})
        mlflow.log_metrics({f"val_{k}": float(v) for k, v in validation.items()
                            if isinstance(v, (int, float))})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts={MODEL_DIR_ARTIFACT: model_dir},
            registered_model_name=settings.registered_model, pip_requirements=PIP_REQUIREMENTS)
        registered = str(info.registered_model_version)
    client.set_model_version_tag(settings.registered_model, registered, VERSION_TAG, model_version)
    log.info("MLflow: run %s, registered %s version %s", run.info.run_id,
             settings.registered_model, registered)
    return {"mlflow_run_id": run.info.run_id, "mlflow_model_version": registered}


def log_evaluation(settings: MlflowSettings, run_id: str | None, model_version: str,
                   report: dict, files: list[Path]) -> str:
    """The test metrics of every scorer and the evaluation files, into the model's training run
    (a run of its own when the model was trained without MLflow). Returns the run id."""
    import mlflow

    _client(settings)
    mlflow.set_experiment(settings.experiment)
    metrics = {f"test_{scorer}_{name}": float(value)
               for scorer, values in report.get("scorers", {}).items()
               for name, value in values.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    kwargs = {"run_id": run_id} if run_id else {"run_name": f"evaluate {model_version}",
                                                "tags": {VERSION_TAG: model_version}}
    with mlflow.start_run(**kwargs) as run:
        mlflow.log_metrics(metrics)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
    return run.info.run_id


def _registered_version(client, settings: MlflowSettings, row: dict) -> str | None:
    if row.get("mlflow_model_version"):
        return str(row["mlflow_model_version"])
    found = client.search_model_versions(
        f"name = '{settings.registered_model}' and tag.`{VERSION_TAG}` = '{row['model_version']}'")
    return str(found[0].version) if found else None


def move_champion_alias(settings: MlflowSettings, row: dict) -> None:
    """Points the champion alias at the registered version of the models row `row`."""
    client = _client(settings)
    version = _registered_version(client, settings, row)
    if version is None:
        log.warning("MLflow: model %s has no registered version (trained without MLflow): the "
                    "%s alias stays where it is", row["model_version"], settings.champion_alias)
        return
    client.set_registered_model_alias(settings.registered_model, settings.champion_alias, version)
    log.info("MLflow: %s@%s -> version %s (%s)", settings.registered_model,
             settings.champion_alias, version, row["model_version"])


def registry_model(settings: MlflowSettings, uri: str, runs_dir: str) -> tuple[str, str]:
    """(model_version, local model directory) of `uri` (models:/<name>@<alias> or
    models:/<name>/<version>), downloaded once under {runs_dir}/mlflow_models/."""
    import mlflow

    match = _MODEL_URI.match(uri)
    if not match:
        raise StageFailed(f"score.model_uri {uri!r} must be models:/<name>@<alias> or "
                          "models:/<name>/<version>")
    if not settings.tracking_uri:
        raise StageFailed("score.model_uri needs mlflow.tracking_uri")
    client = _client(settings)
    name = match["name"]
    try:
        version = (client.get_model_version_by_alias(name, match["alias"]) if match["alias"]
                   else client.get_model_version(name, match["version"]))
    except mlflow.exceptions.MlflowException as exc:
        raise StageFailed(f"score.model_uri {uri}: {exc.message}") from None
    model_version = version.tags.get(VERSION_TAG)
    if not model_version:
        raise StageFailed(f"score.model_uri {uri}: registered version {version.version} has no "
                          f"{VERSION_TAG} tag; it was not logged by demandcast")
    target = Path(runs_dir) / "mlflow_models" / f"{name}-{version.version}"
    if not (target / "MLmodel").is_file():
        partial = target.with_name(target.name + ".partial")
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}",
                                            dst_path=str(partial))
        partial.rename(target)
    return model_version, str(_artifact_dir(target))


def _artifact_dir(pyfunc_dir: Path) -> Path:
    """The model directory inside a downloaded pyfunc model (its MLmodel names the path)."""
    import yaml

    spec = yaml.safe_load((pyfunc_dir / "MLmodel").read_text())
    artifacts = spec["flavors"]["python_function"].get("artifacts", {})
    return pyfunc_dir / artifacts[MODEL_DIR_ARTIFACT]["path"]
