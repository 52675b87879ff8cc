#!/usr/bin/env bash
# Spark's GPU discovery script (spark.executor.resource.gpu.discoveryScript): prints the GPUs
# this executor may use as Spark's ResourceInformation JSON, e.g.
#   {"name": "gpu", "addresses": ["0","1"]}
# The addresses are nvidia-smi's indexes of the GPUs visible in this container; Spark hands one
# to each task (spark.task.resource.gpu.amount=1) and training/devices.py pins the rank to it.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader \
            | tr -d ' ' | grep -v '^$' | sed -e 's/.*/"&"/' | paste -sd, - || true)
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
