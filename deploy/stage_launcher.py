"""spark-submit entry point for every stage: `spark-submit ... deploy/stage_launcher.py STAGE --conf ...`.

The same as `demandcast STAGE --conf ...`, with the project imported from --py-files. Submitting
jobs/<stage>.py directly puts the jobs/ folder first on sys.path, where jobs/features.py shadows
the `features` package (ModuleNotFoundError: 'features' is not a package); this launcher drops
its own folder from sys.path, so it works wherever it is copied to (a release bucket, an image).
"""
import sys
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from demandcast.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
