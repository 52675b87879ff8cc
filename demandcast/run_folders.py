"""runs_dir: the folder where stages keep checkpoints, model directories, evaluations, reports and
the run ledger."""
from __future__ import annotations

from pathlib import Path

from demandcast.errors import ConfigError


def local_dir(location: str) -> Path:
    """Run and model folders are written with plain file I/O (TF, JSON): they need a local or
    mounted shared path (NFS, DBFS FUSE), not an object-store URI."""
    if "://" in location and not location.startswith("file://"):
        raise ConfigError(f"runs_dir={location!r}: training writes checkpoints and models with file "
                          "I/O; mount the bucket and give its local path")
    return Path(location.removeprefix("file://")).resolve()
