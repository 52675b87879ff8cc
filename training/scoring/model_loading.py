"""Model loading for scoring: what the score stage needs of a model, and the loaded models a
Python worker keeps.

A loader is a function of the model directory, or a "module:function" reference that every
worker imports by name (the default loads the SavedModel of a model directory). A worker loads
each model at most once and keeps it as long as the worker lives, so a task loads it at most once
and a reused worker never again.
"""
from __future__ import annotations

import importlib
from typing import Callable, Mapping, Protocol, Sequence

import pandas as pd

from demandcast.logs import get_logger

log = get_logger("scoring")

# The loader the score stage uses; a "module:function" reference so workers import it by name.
DEFAULT_LOADER = "training.model_directory:load_scoring_model"


class ScoringModel(Protocol):
    """What training.model_directory.load_scoring_model returns (docs/CONTRACTS.md "Model directory")."""

    input_columns: Mapping[str, str]   # column -> "numeric" | "categorical"
    category_ids: Sequence[str]        # order of the category head

    def predict(self, features: pd.DataFrame) -> pd.DataFrame: ...


# Worker-process cache: (loader, model_dir) -> loaded model. Lives as long as the Python worker.
_WORKER_MODELS: dict[tuple[str, str], ScoringModel] = {}


def resolve_loader(loader: str | Callable[[str], ScoringModel]) -> Callable[[str], ScoringModel]:
    """A loader is a function, or a 'module:function' reference imported where it runs."""
    if callable(loader):
        return loader
    module, _, name = loader.partition(":")
    if not module or not name:
        raise ValueError(f"model loader must be 'module:function', got {loader!r}")
    return getattr(importlib.import_module(module), name)


def _loader_name(loader: str | Callable[[str], ScoringModel]) -> str:
    if isinstance(loader, str):
        return loader
    return f"{loader.__module__}:{loader.__qualname__}"


def cached_model(model_dir: str, loader: str | Callable[[str], ScoringModel] = DEFAULT_LOADER
                 ) -> ScoringModel:
    """The model of `model_dir`, loaded at most once in this process."""
    key = (_loader_name(loader), model_dir)
    if key not in _WORKER_MODELS:
        log.info("loading model %s in process", model_dir)
        _WORKER_MODELS[key] = resolve_loader(loader)(model_dir)
    return _WORKER_MODELS[key]
