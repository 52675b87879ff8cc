"""Loads conf/*.yaml (with `extends:` layering) and --set overrides into one validated object.

Errors name the bad key and the files it came from; the CLI turns them into exit code 2.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from demandcast.errors import ConfigError
from demandcast.settings.evaluate import EvaluateSettings
from demandcast.settings.features import FeaturesSettings
from demandcast.settings.generate import GenerateSettings
from demandcast.settings.ingest import IngestSettings
from demandcast.settings.report import ReportSettings
from demandcast.settings.run_all import RunAllSettings
from demandcast.settings.runtime import RuntimeSettings, SparkSettings
from demandcast.settings.score import ScoreSettings
from demandcast.settings.train import TrainSettings

__all__ = ["PipelineConfig", "SparkSettings", "load_config", "DEFAULT_CONF"]

DEFAULT_CONF = "conf/local.yaml"


class PipelineConfig(RuntimeSettings):
    """The whole configuration: the shared runtime keys at the top, one section per stage."""

    generate: GenerateSettings = GenerateSettings()
    ingest: IngestSettings = IngestSettings()
    features: FeaturesSettings = FeaturesSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    score: ScoreSettings = ScoreSettings()
    run_all: RunAllSettings = RunAllSettings()
    report: ReportSettings = ReportSettings()


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """Reads one file and, first, the file it `extends` (relative to itself)."""
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{where}")
    if path.resolve() in {p.resolve() for p in chain}:
        raise ConfigError(f"config file {path} extends itself through {[str(p) for p in chain]}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top, not {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is None:
        return data, [path]
    if not isinstance(parent, str):
        raise ConfigError(f"key 'extends' in {path} must be a file name")
    base, files = _read_yaml(path.parent / parent, chain + (path,))
    return _deep_merge(base, data), files + [path]


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects KEY=VALUE with a dotted key, got {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _format_errors(exc: ValidationError, sources: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'")
        else:
            lines.append(f"  key '{key}': {err['msg']} (got {err.get('input')!r})")
    return f"invalid configuration from {sources}:\n" + "\n".join(lines)


def load_config(conf: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Reads `conf` (default conf/local.yaml) and its `extends` chain, applies --set overrides."""
    overrides = list(overrides)
    data, files = _read_yaml(Path(conf or DEFAULT_CONF))
    for assignment in overrides:
        _apply_override(data, assignment)
    sources = " + ".join(str(f) for f in files) + (" + --set" if overrides else "")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, sources)) from None
