"""deploy/: the submit wrapper's exact commands, its packaging, and the manifests."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from demandcast.config import load_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "deploy"))
import submit  # noqa: E402

VENV_PY = str(PROJECT_ROOT / ".venv" / "bin" / "python")


def _dry_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "deploy" / "submit.py"), *args, "--dry-run"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)


def _split(printed: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(printed)
    env = {}
    while "=" in words[0] and not words[0].startswith("/"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == flag]


def test_dry_run_standalone_prints_the_exact_command(tmp_path):
    result = _dry_run("run-all", "--profile", "standalone", "--conf", "conf/cluster.yaml",
                      "--set", "warehouse=/data/wh", "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    env, argv = _split(result.stdout.strip())
    assert env == {"SPARK_LOCAL_IP": "127.0.0.1"}
    assert argv[0].endswith("/bin/spark-submit")
    assert argv[1:7] == ["--master", "spark://127.0.0.1:7077", "--deploy-mode", "client",
                         "--name", "demandcast-run-all"]
    assert _pairs(argv, "--py-files") == [str(tmp_path / "demandcast-0.1.0-py3-none-any.zip")]
    assert "--archives" not in argv  # wheel mode: the stack is on the nodes
    assert _pairs(argv, "--files") == [",".join(str(PROJECT_ROOT / "conf" / f)
                                                for f in ("base.yaml", "cluster.yaml", "log4j2.properties"))]
    jars = _pairs(argv, "--jars")[0].split(",")
    assert jars == sorted(str(p) for p in (PROJECT_ROOT / ".jars").glob("*.jar")) and jars
    assert "--packages" not in argv  # offline: the local jars replace Maven resolution
    confs = _pairs(argv, "--conf")
    assert f"spark.pyspark.python={VENV_PY}" in confs
    assert "spark.cores.max=2" in confs and "spark.scheduler.minRegisteredResourcesRatio=1.0" in confs
    # The job and its own arguments come last: config by path, the user's --set, then the
    # keys that make the session factory agree with spark-submit.
    script = argv.index(str(PROJECT_ROOT / "deploy" / "stage_launcher.py"))
    assert argv[script + 1:] == [
        "run-all", "--conf", str(PROJECT_ROOT / "conf" / "cluster.yaml"), "--set", "warehouse=/data/wh",
        "--set", f"spark.python={VENV_PY}", "--set", "spark.packages=[]", "--set", "spark.jars_dir=null"]
    # ... and those job arguments form a valid configuration.
    sets = _pairs(argv[script:], "--set")
    cfg = load_config(PROJECT_ROOT / "conf" / "cluster.yaml", sets)
    assert cfg.spark.python == VENV_PY and cfg.spark.packages == [] and cfg.spark.jars_dir is None


def test_dry_run_yarn_ships_the_venv_archive_and_config_by_name(tmp_path):
    result = _dry_run("run-all", "--profile", "yarn", "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    env, argv = _split(result.stdout.strip())
    assert argv[argv.index("--master") + 1] == "yarn" and argv[argv.index("--deploy-mode") + 1] == "cluster"
    assert _pairs(argv, "--archives") == [f"{tmp_path / 'demandcast-env-0.1.0.tar.gz'}#environment"]
    assert "spark.pyspark.python=./environment/bin/python" in _pairs(argv, "--conf")
    assert _pairs(argv, "--packages") == ["io.delta:delta-spark_2.13:4.0.1"]
    assert "--jars" not in argv
    # The driver runs on a cluster node where --files land in its working directory.
    assert argv[-6:] == [str(PROJECT_ROOT / "deploy" / "stage_launcher.py"), "run-all",
                         "--conf", "cluster.yaml", "--set", "spark.python=./environment/bin/python"]
    assert "-Dlog4j2.configurationFile=log4j2.properties" in argv[argv.index("--driver-java-options") + 1]
    assert not any(tmp_path.iterdir())  # a dry run builds nothing


def test_cluster_mode_passes_the_hash_key_to_the_driver_and_masks_it(tmp_path):
    secret = "9f" * 32
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "deploy" / "submit.py"), "run-all", "--profile", "yarn",
         "--build-dir", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
        env={**os.environ, "DEMANDCAST_USER_HASH_KEY": secret})
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    confs = _pairs(_split(result.stdout.strip())[1], "--conf")
    assert "spark.yarn.appMasterEnv.DEMANDCAST_USER_HASH_KEY=***" in confs
    regex = next(c for c in confs if c.startswith("spark.redaction.regex="))
    assert re.search(regex.split("=", 1)[1], "DEMANDCAST_USER_HASH_KEY")


def test_package_override_and_extra_conf(tmp_path):
    result = _dry_run("run-all", "--profile", "k8s", "--package", "venv", "--master", "k8s://https://k:6443",
                      "--spark-conf", "spark.executor.instances=3", "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    _, argv = _split(result.stdout.strip())
    assert argv[argv.index("--master") + 1] == "k8s://https://k:6443"
    assert "--archives" in argv
    confs = _pairs(argv, "--conf")
    assert "spark.executor.instances=3" in confs and "spark.executor.instances=10" not in confs


@pytest.mark.parametrize("args, message", [
    (["run-all", "--profile", "nowhere"], "unknown profile 'nowhere'"),
    (["no-such-stage", "--profile", "local"], "unknown stage 'no-such-stage'"),
    (["run-all", "--profile", "local", "--set", "spark.shuffle_partitions=0"], "spark.shuffle_partitions"),
    (["run-all", "--profile", "local", "--conf", "conf/missing.yaml"], "config file not found"),
    (["run-all", "--profile", "yarn", "--set", "spark.packages=[]"], "spark.packages"),
    (["run-all", "--profile", "local", "--spark-conf", "novalue"], "KEY=VALUE"),
])
def test_bad_submissions_exit_2_with_a_clear_message(args, message):
    result = _dry_run(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_code_package_holds_the_project_packages_only(tmp_path):
    artifacts = submit.Artifacts.planned("wheel", tmp_path)
    artifacts.build(PROJECT_ROOT / ".venv")
    names = zipfile.ZipFile(artifacts.code_zip).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("demandcast-0.1.0.dist-info")}
    assert tops == set(submit.project_packages()) >= {"demandcast", "jobs"}
    assert "demandcast/session.py" in names and "jobs/run_all.py" in names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    # Importable straight from the zip, as executors do with --py-files.
    out = subprocess.run([sys.executable, "-I", "-c",
                          "import sys; sys.path.insert(0, sys.argv[1]); import demandcast.tables as t; "
                          "print(t.__file__)", str(artifacts.code_zip)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(artifacts.code_zip))


def test_stage_launcher_imports_the_project_from_anywhere(tmp_path):
    """Run as a script the way spark-submit runs it, from another folder, the launcher reaches
    the stage's config validation: imports work, exit 2 on a bad key."""
    launched = subprocess.run([VENV_PY, str(PROJECT_ROOT / "deploy" / "stage_launcher.py"), "features",
                               "--conf", str(PROJECT_ROOT / "conf" / "local.yaml"), "--set", "no_such_key=1"],
                              capture_output=True, text=True, cwd=tmp_path)
    assert launched.returncode == 2, launched.stderr[-2000:]
    assert "unknown key 'no_such_key'" in launched.stderr


def _small_venv(root: Path) -> Path:
    """A stand-in for a release environment (packing the real one takes minutes)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (next((venv / "lib").glob("python3.*")) / "site-packages" / "stub_module.py").write_text("")
    return venv


def test_venv_package_packs_the_environment(tmp_path):
    venv = _small_venv(tmp_path)
    site = next((venv / "lib").glob("python3.*")) / "site-packages"
    # The import-hook editable install `pip install -e .` makes (as in .venv): packable, left out.
    (site / "__editable__.demandcast-0.1.0.pth").write_text("import __editable___demandcast_finder\n")
    (site / "__editable___demandcast_finder.py").write_text("")
    submit.check_packable(venv)
    artifacts = submit.Artifacts.planned("venv", tmp_path / "out")
    artifacts.build(venv)
    import tarfile
    names = tarfile.open(artifacts.env_archive).getnames()
    assert "bin/python" in names and "pyvenv.cfg" in names
    assert any(n.endswith("site-packages/stub_module.py") for n in names)
    assert not any("editable" in n for n in names), names
    assert artifacts.code_zip.is_file()


def test_venv_package_refuses_a_develop_install_before_building(tmp_path):
    venv = _small_venv(tmp_path)
    site = next((venv / "lib").glob("python3.*")) / "site-packages"
    (site / "demandcast.egg-link.pth").write_text(str(PROJECT_ROOT) + "\n")  # `setup.py develop`
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "deploy" / "submit.py"), "run-all",
                             "--profile", "yarn", "--venv", str(venv), "--build-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 2
    assert "point outside" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_profiles_are_complete():
    profiles = submit.load_profiles()
    assert set(profiles) >= {"standalone", "local", "yarn", "k8s"}
    assert profiles["k8s"].conf["spark.kubernetes.container.image"]


def test_k8s_manifest_parses_and_runs_a_real_stage_script():
    docs = list(yaml.safe_load_all((PROJECT_ROOT / "deploy" / "k8s" / "sparkapplication.yaml").read_text()))
    app = next(d for d in docs if d["kind"] == "SparkApplication")
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    spec = app["spec"]
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    assert spec["mainApplicationFile"] == "local:///opt/demandcast/deploy/stage_launcher.py"
    from demandcast.cli import STAGES
    stage, *args = spec["arguments"]
    assert stage in STAGES
    assert args[:2] == ["--conf", "/etc/demandcast/cluster.yaml"]
    assert spec["sparkConf"]["spark.pyspark.python"] == args[3].split("=", 1)[1]
    assert spec["deps"]["packages"] == load_config(PROJECT_ROOT / "conf" / "cluster.yaml").spark.packages
    for role in ("driver", "executor"):
        assert any(e["name"] == "DEMANDCAST_USER_HASH_KEY" for e in spec[role]["env"])
        assert spec[role]["volumeMounts"][0]["mountPath"] == "/etc/demandcast"
