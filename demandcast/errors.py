"""Errors that map to the CLI's exit codes (README: "Exit codes")."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA_QUALITY = 3


class DemandcastError(Exception):
    """Base of the errors the CLI turns into a one-line message and an exit code."""

    exit_code = EXIT_FAILURE


class ConfigError(DemandcastError):
    """Bad usage or configuration: unknown key, wrong type, missing file. Exit 2."""

    exit_code = EXIT_USAGE


class DataQualityError(DemandcastError):
    """A data-quality gate refused the data; nothing was committed. Exit 3."""

    exit_code = EXIT_DATA_QUALITY


class StageFailed(DemandcastError):
    """A stage failed for a reason worth a clear message rather than a traceback. Exit 1."""

    exit_code = EXIT_FAILURE
