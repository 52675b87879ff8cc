"""kill -9 of a feature or scoring job in the middle of its Delta write (issue 8, point 1)."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from demandcast.tables import current_version, files_of_version

from .conftest import data_files, kill_during_write, table_rows

pytestmark = pytest.mark.slow

# Columns that legitimately differ between two runs of the same stage (wall-clock stamps).
VOLATILE = {"user_features": (), "predictions": ("scored_at",)}


@pytest.mark.parametrize("stage, table, sets", [
    ("features", "user_features", ()),
    ("score", "predictions", ("score.force=true",)),
])
def test_kill_9_mid_write_keeps_the_last_version_and_a_rerun_equals_a_clean_run(
        spark, pipeline, tmp_path, stage, table, sets):
    copy = pipeline.copy_to(tmp_path / "copy")
    path = copy.warehouse / table
    version = current_version(spark, str(path))
    clean = table_rows(spark, pipeline.warehouse / table, drop=VOLATILE[table])

    # The kill must land after data files are written and before the commit: a stage that
    # committed first is not the case under test, so try again (the commit is not lost work).
    for _ in range(3):
        on_disk = data_files(path)
        if kill_during_write(copy.start(stage, *sets), path):
            break
        version = current_version(spark, str(path))
    else:
        pytest.fail(f"{stage} committed {table} every time before it could be killed")
    written_by_killed_run = data_files(path) - on_disk
    assert written_by_killed_run, "the kill did not land during the write"

    # Readable at its previous version, with the previous content.
    assert current_version(spark, str(path)) == version
    assert table_rows(spark, path, drop=VOLATILE[table]) == clean

    copy.cli(stage, *sets)
    assert current_version(spark, str(path)) == version + 1
    # No lost or duplicated rows: every column equal to the clean run's table.
    assert table_rows(spark, path, drop=VOLATILE[table]) == clean
    # The killed attempt's files stay on disk (VACUUM removes them) but no version refers to them.
    assert not written_by_killed_run & files_of(spark, path, version + 1)


def files_of(spark, path: Path, version: int) -> set[Path]:
    return {Path(unquote(urlparse(uri).path)) for uri in files_of_version(spark, str(path), version)}
