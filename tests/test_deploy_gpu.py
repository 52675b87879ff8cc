"""deploy/gpu: the GPU image recipe agrees with the project's pins, and the gpu profile submits
GPU-scheduled executors that the image's discovery script can serve. (The image itself is not
built here: no Docker, no GPU.)"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyspark

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (PROJECT_ROOT / "deploy" / "gpu" / "Dockerfile").read_text()
DISCOVERY = PROJECT_ROOT / "deploy" / "gpu" / "getGpusResources.sh"


def pins() -> dict[str, str]:
    lines = (PROJECT_ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def pom_versions(path: Path) -> dict[str, str]:
    text = path.read_text()
    return dict(re.findall(r"<artifactId>([^<]+)</artifactId>\s*<version>([^<]+)</version>", text))


def test_gpu_image_pins_agree_with_constraints_and_spark():
    pinned = pins()
    assert f'"tensorflow[and-cuda]=={pinned["tensorflow-cpu"]}"' in DOCKERFILE
    for package in ("horovod", "pyspark", "delta-spark", "petastorm", "pyarrow"):
        found = set(re.findall(rf"\b{package}==([\w.]+)", DOCKERFILE))
        assert found == {pinned[package]}, (package, found, pinned[package])
    # Every other pin comes from constraints.txt itself, minus the CPU TensorFlow.
    assert "grep -v '^tensorflow-cpu==' constraints.txt" in DOCKERFILE
    # TensorFlow 2.15's CUDA 12.2 / cuDNN 8.9; NCCL and Gloo in Horovod; Java 17 for Spark 4.0.
    assert re.search(r"^FROM nvidia/cuda:12\.2\.\d+-cudnn8-devel-ubuntu22\.04$", DOCKERFILE, re.M)
    for flag in ("HOROVOD_GPU_OPERATIONS=NCCL", "HOROVOD_WITH_TENSORFLOW=1", "HOROVOD_WITH_GLOO=1"):
        assert flag in DOCKERFILE
    assert "openjdk-17-jre-headless" in DOCKERFILE
    # The Delta jars of the pinned delta-spark; S3A of the Hadoop that pyspark ships.
    assert pom_versions(PROJECT_ROOT / "deploy" / "jars" / "pom.xml")["delta-spark_2.13"] == \
        pinned["delta-spark"]
    hadoop = {p.name.rsplit("-", 1)[1].removesuffix(".jar")
              for p in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar")}
    s3a = pom_versions(PROJECT_ROOT / "deploy" / "gpu" / "s3a-pom.xml")
    assert hadoop == {s3a["hadoop-aws"]} and s3a["bundle"].startswith("2.")


def test_gpu_profile_schedules_one_gpu_per_executor_with_the_image_discovery_script(tmp_path):
    sys.path.insert(0, str(PROJECT_ROOT / "deploy"))
    import submit

    profile = submit.load_profiles()["gpu"]
    script = profile.conf["spark.executor.resource.gpu.discoveryScript"]
    assert f"deploy/gpu/getGpusResources.sh {script}" in DOCKERFILE
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "deploy" / "submit.py"), "train", "--profile", "gpu",
         "--set", "train.launcher=spark", "--set", "train.use_gpu=true",
         "--set", "train.num_proc=4", "--build-dir", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout.strip())
    confs = {argv[i + 1].split("=", 1)[0]: argv[i + 1].split("=", 1)[1]
             for i, word in enumerate(argv[:-1]) if word == "--conf" and "=" in argv[i + 1]}
    assert confs["spark.executor.resource.gpu.amount"] == confs["spark.task.resource.gpu.amount"] == "1"
    assert confs["spark.executor.cores"] == confs["spark.task.cpus"]
    assert confs["spark.executor.instances"] == "4" and confs["spark.dynamicAllocation.enabled"] == "false"
    assert confs["spark.kubernetes.container.image"].endswith("spark-gpu:0.1.0")
    # The jars are in the image: neither shipped nor resolved at submit.
    assert "--jars" not in argv and "--packages" not in argv
    assert "spark.packages=[]" in argv and "train.use_gpu=true" in argv


def test_discovery_script_reports_the_gpus_nvidia_smi_lists(tmp_path):
    fake = tmp_path / "nvidia-smi"
    for listed, addresses in (("0\n1\n", ["0", "1"]), ("", [])):
        fake.write_text(f"#!/bin/sh\nprintf '{listed}'\n")
        fake.chmod(0o755)
        done = subprocess.run(["bash", str(DISCOVERY)], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"name": "gpu", "addresses": addresses}
