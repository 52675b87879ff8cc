"""spark-submit entry point for every stage: `spark-submit ... deploy/stage_launcher.py STAGE --conf ...`.

The same as `demandcast STAGE --conf ...`, with the project imported from --py-files: one small
script serves every stage, so a release ships it next to the wheel (a bucket, an image) and the
stage is an argument, as in the Airflow DAG and the Kubernetes manifest.
"""
import sys

from demandcast.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
