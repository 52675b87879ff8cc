"""What run-all remembers about each stage it ran: the fingerprint of its inputs and the versions
of the tables it left. A stage is skipped when both still match, so a rerun after a failure
continues where it stopped, and a stage reruns when its config, an upstream stage, or one of its
output tables changed since."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from demandcast.logs import get_logger

log = get_logger("ledger")


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (dicts are key-sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StageRecord:
    stage: str
    fingerprint: str
    table_versions: dict[str, int | None]
    artifacts: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    finished_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


class StageLedger:
    """One JSON file per stage in a local folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def load(self, stage: str) -> StageRecord | None:
        path = self._file(stage)
        if not path.is_file():
            return None
        try:
            return StageRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable ledger entry %s: %s", path, exc)
            return None

    def save(self, record: StageRecord) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._file(record.stage).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True, default=str))
        tmp.replace(self._file(record.stage))  # atomic: a kill never leaves half a record

    def forget(self, stage: str) -> None:
        self._file(stage).unlink(missing_ok=True)


def still_current(record: StageRecord | None, fp: str, table_versions: dict[str, int | None]) -> str | None:
    """None when the recorded run is still valid, else the reason to run the stage again."""
    if record is None:
        return "never ran"
    if record.fingerprint != fp:
        return "inputs or config changed"
    # The tables the stage declares now: one it no longer declares (a record written before
    # train stopped tracking `models`) is no reason to rerun; a newly declared one is.
    for table, version in table_versions.items():
        if record.table_versions.get(table) != version:
            return f"table {table} is at version {version}, recorded {record.table_versions.get(table)}"
    missing = [a for a in record.artifacts if not Path(a).exists()]
    if missing:
        return f"missing {missing[0]}"
    return None
