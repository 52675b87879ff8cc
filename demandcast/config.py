"""Loads conf/*.yaml (with `extends:` layering) and --set overrides into one validated object.

Errors name the bad key and the files it came from; the CLI turns them into exit code 2.
"""
from __future__ import annotations

import copy
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from demandcast.errors import ConfigError
from demandcast.settings.catalog import CatalogSettings
from demandcast.settings.evaluate import EvaluateSettings
from demandcast.settings.features import FeaturesSettings
from demandcast.settings.generate import GenerateSettings
from demandcast.settings.ingest import IngestSettings
from demandcast.settings.maintain import MaintainSettings
from demandcast.settings.promote import PromoteSettings
from demandcast.settings.report import ReportSettings
from demandcast.settings.run_all import RunAllSettings
from demandcast.settings.runtime import RuntimeSettings, SparkSettings
from demandcast.settings.score import ScoreSettings
from demandcast.settings.tracking import MlflowSettings
from demandcast.settings.train import TrainSettings

__all__ = ["PipelineConfig", "SparkSettings", "load_config", "DEFAULT_CONF"]

DEFAULT_CONF = "conf/local.yaml"
_MAX_INPUT_REPR = 80


class PipelineConfig(RuntimeSettings):
    """The whole configuration: the shared runtime keys at the top, one section per stage."""

    generate: GenerateSettings = GenerateSettings()
    ingest: IngestSettings = IngestSettings()
    features: FeaturesSettings = FeaturesSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    promote: PromoteSettings = PromoteSettings()
    score: ScoreSettings = ScoreSettings()
    run_all: RunAllSettings = RunAllSettings()
    report: ReportSettings = ReportSettings()
    maintain: MaintainSettings = MaintainSettings()
    catalog: CatalogSettings = CatalogSettings()
    mlflow: MlflowSettings = MlflowSettings()


class _Loader(yaml.SafeLoader):
    """SafeLoader whose impossible dates (2025-13-01) are YAML errors with a line, not a bare
    ValueError from deep inside the date constructor."""

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid date {node.value!r} ({exc})", node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _parse_yaml(text: str) -> Any:
    """yaml.safe_load with _Loader's date check (what yaml.load does, spelled out so no
    loader other than a SafeLoader can ever be passed)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: the problem and where it is (YAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(problem.split())


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """Reads one file and, first, the file it `extends` (relative to itself)."""
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else ""
        what = "is a directory, not a config file" if path.is_dir() else "not found"
        raise ConfigError(f"config file {what}: {path}{where}")
    if path.resolve() in {p.resolve() for p in chain}:
        raise ConfigError(f"config file {path} extends itself through {[str(p) for p in chain]}")
    try:
        data = _parse_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if data is None:
        # An empty file (or one of comments only) is a truncated or mis-templated config far more
        # often than a wish for the built-in defaults: refuse it rather than run on them.
        raise ConfigError(f"config file {path} is empty; it needs at least `extends: <file>`")
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


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _child_type(parent: Any, part: str) -> Any:
    """The annotation under `part` of a section (a pydantic model) or of a free map (dict[str, V])."""
    if typing.get_origin(parent) is dict:
        return _unwrap_optional(typing.get_args(parent)[1])
    fields = getattr(parent, "model_fields", None)
    if fields and part in fields:
        return _unwrap_optional(fields[part].annotation)
    return None


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects KEY=VALUE with a dotted key, got {assignment!r}")
    try:
        value = _parse_yaml(raw) if raw.strip() else ""
    except yaml.constructor.ConstructorError as exc:  # YAML that parses but is no value: a bad date
        raise ConfigError(f"--set {key}: {' '.join(str(exc.problem).split())}") from None
    except yaml.YAMLError:  # not YAML at all: the text itself, e.g. a path with a colon
        value = raw
    node = data
    parts = key.split(".")
    kind: Any = PipelineConfig
    while len(parts) > 1:
        if typing.get_origin(kind) is dict and typing.get_origin(_child_type(kind, "")) is not dict:
            # A free map of scalars (spark.conf, ingest.csv_options): its keys hold dots
            # themselves, so `spark.conf.spark.sql.ansi.enabled=true` sets one entry.
            parts = [".".join(parts)]
            break
        part = parts.pop(0)
        kind = _child_type(kind, part)
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[0]] = value


def _known_keys(loc: tuple) -> list[str]:
    """The keys the section at `loc` (a path of field names) accepts; [] when it is no section."""
    model: Any = PipelineConfig
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = _unwrap_optional(fields[part].annotation)
    return list(getattr(model, "model_fields", {}))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_INPUT_REPR else text[:_MAX_INPUT_REPR - 3] + "..."


def _format_errors(exc: ValidationError, sources: str) -> str:
    """One line: every bad key with what is wrong with it, then the files it came from."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), _known_keys(err["loc"][:-1]), n=1)
            hint = f" (did you mean '{'.'.join([*map(str, err['loc'][:-1]), close[0]])}'?)" \
                if close else ""
            problems.append(f"unknown key '{key}'{hint}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"key '{key}': {msg} (got {_short(err.get('input'))})")
    return f"invalid configuration: {'; '.join(problems)} [from {sources}]"


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
