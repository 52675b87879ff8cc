"""Submit one pipeline stage to a cluster with spark-submit, packaged the way deploy/ prescribes.

    python deploy/submit.py STAGE --profile yarn|k8s|standalone|local --conf conf/cluster.yaml
        [--set KEY=VALUE ...] [--package wheel|venv] [--master URL] [--spark-conf KEY=VALUE ...]
        [--dry-run]

STAGE is a stage of `demandcast` (ingest, features, ...; run through deploy/stage_launcher.py) or
the path of a job script such as deploy/cluster_probe.py. The wrapper
- validates the config (and its `extends` chain) before anything is built: exit 2 on errors;
- packages the code: `wheel` builds the project wheel (`pip wheel --no-deps`) and ships it as a
  .zip with --py-files (Spark puts only .zip/.egg/.jar on sys.path; a pure wheel is such a zip);
  `venv` also packs .venv with venv-pack and ships it with --archives as ./environment;
- ships the config files with --files, the Delta jars with --jars (profile `jars: local`) or
  the config's spark.packages with --packages;
- tells the job which interpreter the executors use (`--set spark.python=...`) so the session
  factory and spark-submit agree.
`--dry-run` prints the exact command (environment assignments first) and builds nothing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(PROJECT_ROOT))

import yaml  # noqa: E402

from demandcast.cli import STAGES  # noqa: E402
from demandcast.config import _read_yaml, load_config  # noqa: E402
from demandcast.errors import EXIT_USAGE, ConfigError  # noqa: E402

PROFILES_FILE = PROJECT_ROOT / "deploy" / "profiles.yaml"
# Spark's default redaction plus the hashing key's variable.
REDACTION_REGEX = "(?i)secret|password|token|access[.]?key|hash_key"
ENV_ALIAS = "environment"  # --archives env.tar.gz#environment -> ./environment on every node
PACKAGES = ("wheel", "venv")


@dataclass(frozen=True)
class Profile:
    name: str
    master: str
    deploy_mode: str
    package: str
    python: str
    jars: str
    env: dict[str, str] = field(default_factory=dict)
    conf: dict[str, str] = field(default_factory=dict)


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Profile]:
    raw = yaml.safe_load(path.read_text()) or {}
    profiles = {}
    for name, body in raw.items():
        try:
            profile = Profile(name=name, **body)
        except TypeError as exc:
            raise ConfigError(f"{path}: profile '{name}': {exc}") from None
        if profile.deploy_mode not in ("client", "cluster"):
            raise ConfigError(f"{path}: profile '{name}': deploy_mode must be client or cluster")
        if profile.package not in PACKAGES or profile.jars not in ("local", "packages", "image"):
            raise ConfigError(f"{path}: profile '{name}': package must be one of {PACKAGES}, "
                              "jars local, packages or image")
        profiles[name] = Profile(**{**profile.__dict__,
                                    "env": {k: str(v) for k, v in profile.env.items()},
                                    "conf": {k: str(v) for k, v in profile.conf.items()}})
    return profiles


def _pyproject() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def project_version() -> str:
    return _pyproject()["project"]["version"]


def project_packages() -> list[str]:
    """Top-level packages the wheel holds: pyproject's `packages.find` include patterns."""
    patterns = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {p.split(".")[0].rstrip("*") for p in patterns}
    return sorted(t for t in tops if (PROJECT_ROOT / t / "__init__.py").is_file())


@dataclass(frozen=True)
class Artifacts:
    """What travels with the job: the code as a zip, and in venv mode the packed environment."""

    code_zip: Path
    env_archive: Path | None

    @classmethod
    def planned(cls, package: str, build_dir: Path) -> "Artifacts":
        version = project_version()
        return cls(code_zip=build_dir / f"demandcast-{version}-py3-none-any.zip",
                   env_archive=build_dir / f"demandcast-env-{version}.tar.gz" if package == "venv" else None)

    def build(self, venv: Path) -> None:
        build_dir = self.code_zip.parent
        build_dir.mkdir(parents=True, exist_ok=True)
        wheel_dir = build_dir / "wheel"
        source = build_dir / "source"
        for stale in (wheel_dir, source):
            shutil.rmtree(stale, ignore_errors=True)
        # A clean copy of what pyproject.toml packages: setuptools' build/ folder in the
        # checkout would keep modules deleted since the last build, and is shared by runs.
        source.mkdir()
        shutil.copy2(PROJECT_ROOT / "pyproject.toml", source)
        for package in project_packages():
            shutil.copytree(PROJECT_ROOT / package, source / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # No build isolation: the venv's setuptools builds it, nothing is downloaded.
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                "--disable-pip-version-check", "-q", "-w", str(wheel_dir), str(source)],
                               cwd=source, capture_output=True, text=True)
        if built.returncode != 0:  # setuptools' warnings are noise unless the build failed
            raise RuntimeError(f"building the project wheel failed:\n{built.stdout}{built.stderr}")
        wheels = sorted(wheel_dir.glob("demandcast-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one demandcast wheel in {wheel_dir}, found {wheels}")
        shutil.copyfile(wheels[0], self.code_zip)
        if self.env_archive is not None:
            # A setuptools editable install (an import hook in a .pth, which venv-pack accepts)
            # stays out: it points at this checkout; the code ships in --py-files.
            venv_pack = Path(sys.executable).with_name("venv-pack")
            subprocess.run([str(venv_pack), "-q", "-p", str(venv), "-o", str(self.env_archive), "--force",
                            "--exclude", "*__editable__*"], check=True)


def check_packable(venv: Path) -> None:
    """venv-pack refuses environments whose .pth files point outside them (legacy editable
    installs, `setup.py develop`): say so before anything is built."""
    if not (venv / "pyvenv.cfg").is_file():
        raise ConfigError(f"--venv {venv}: not a virtual environment")
    outside = []
    for pth in venv.glob("lib/python3.*/site-packages/*.pth"):
        for line in pth.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                target = os.path.normpath(os.path.join(pth.parent, line))
                if not target.startswith(str(venv.resolve())):
                    outside.append(f"{pth.name}: {line[:80]}")
    if outside:
        raise ConfigError(
            f"--package venv: .pth files of {venv} point outside it, which venv-pack cannot pack "
            f"({'; '.join(outside)}). Pack a release environment without them (the project code "
            "ships in --py-files anyway): --venv PATH; see deploy/README.md")


LAUNCHER = PROJECT_ROOT / "deploy" / "stage_launcher.py"


def application(stage: str) -> tuple[Path, list[str]]:
    """The file spark-submit runs and its leading arguments.

    A stage runs through deploy/stage_launcher.py (`demandcast STAGE` from the shipped code), the
    one script a release ships for every stage. A path runs that job script itself.
    """
    if stage.endswith(".py"):
        path = Path(stage).resolve()
        if not path.is_file():
            raise ConfigError(f"job script not found: {stage}")
        return path, []
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages are {', '.join(sorted(STAGES))} "
                          "or the path of a job script")
    module = PROJECT_ROOT / (STAGES[stage].replace(".", "/") + ".py")
    if not module.is_file():
        raise ConfigError(f"stage {stage!r} has no job module yet ({module})")
    return LAUNCHER, [stage]


def config_files(conf: Path) -> list[Path]:
    """The config file and every file it `extends`: all are shipped side by side with --files."""
    _, files = _read_yaml(conf)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ConfigError(f"config chain {[str(f) for f in files]} repeats a file name; "
                          "--files would put them in one folder")
    return [f.resolve() for f in files]


def spark_submit_binary() -> str:
    """The cluster's spark-submit when SPARK_HOME is set (edge nodes), else the pip pyspark's."""
    home = os.environ.get("SPARK_HOME")
    if not home:
        import pyspark

        home = str(Path(pyspark.__file__).resolve().parent)
    return str(Path(home) / "bin" / "spark-submit")


def build_command(
    stage: str,
    profile: Profile,
    conf: Path,
    sets: list[str],
    package: str,
    artifacts: Artifacts,
    master: str | None = None,
    spark_conf: list[str] = (),
) -> tuple[dict[str, str], list[str]]:
    """The environment additions and the argv of spark-submit for one submission."""
    cfg = load_config(conf, sets)  # fail before building anything: exit 2 on a bad config
    cluster_mode = profile.deploy_mode == "cluster"
    files = config_files(conf) + [PROJECT_ROOT / "conf" / "log4j2.properties"]

    if package == "venv":
        executor_python = f"./{ENV_ALIAS}/bin/python"
    else:
        executor_python = profile.python.format(project=PROJECT_ROOT)
    driver_python = executor_python if cluster_mode else sys.executable

    argv = [spark_submit_binary(), "--master", master or profile.master,
            "--deploy-mode", profile.deploy_mode, "--name", f"demandcast-{Path(stage).stem}",
            "--conf", f"spark.pyspark.python={executor_python}",
            "--conf", f"spark.pyspark.driver.python={driver_python}",
            "--py-files", str(artifacts.code_zip)]
    if artifacts.env_archive is not None:
        argv += ["--archives", f"{artifacts.env_archive}#{ENV_ALIAS}"]
    argv += ["--files", ",".join(str(f) for f in files)]

    job_sets = list(sets) + [f"spark.python={executor_python}"]
    if profile.jars == "local":
        jars_dir = PROJECT_ROOT / ".jars"
        jars = sorted(str(p) for p in jars_dir.glob("*.jar"))
        if not jars:
            raise ConfigError(f"profile {profile.name}: no Delta jars in {jars_dir}; run `make install`")
        argv += ["--jars", ",".join(jars)]
        job_sets += ["spark.packages=[]", "spark.jars_dir=null"]
    elif profile.jars == "image":
        # The image has Delta and S3A in Spark's own jars folder (deploy/gpu/Dockerfile).
        job_sets += ["spark.packages=[]", "spark.jars_dir=null"]
    elif cfg.spark.packages:
        argv += ["--packages", ",".join(cfg.spark.packages)]
    else:
        raise ConfigError(f"profile {profile.name} takes the Delta jars from spark.packages, "
                          f"which is empty in {conf}")

    # The user-id hashing key reaches a driver that runs on the cluster through its environment
    # (client mode: inherited). Spark redacts the value in its UI and event log; render() here.
    hash_key = os.environ.get(cfg.user_hash_key_env)
    driver_env = {"yarn": "spark.yarn.appMasterEnv.", "k8s": "spark.kubernetes.driverEnv."}
    kind = "k8s" if (master or profile.master).startswith("k8s://") else (master or profile.master)
    if cluster_mode and hash_key and kind in driver_env:
        argv += ["--conf", f"{driver_env[kind]}{cfg.user_hash_key_env}={hash_key}",
                 "--conf", f"spark.redaction.regex={REDACTION_REGEX}"]

    log4j = "log4j2.properties" if cluster_mode else str(PROJECT_ROOT / "conf" / "log4j2.properties")
    argv += ["--driver-java-options", f"-Duser.timezone=UTC -Dlog4j2.configurationFile={log4j}"]
    for key, value in {**profile.conf, **dict(kv.split("=", 1) for kv in spark_conf)}.items():
        argv += ["--conf", f"{key}={value}"]

    # In cluster mode the driver runs on a node where --files sit in its working directory.
    conf_arg = conf.name if cluster_mode else str(conf.resolve())
    script, leading = application(stage)
    argv += [str(script), *leading, "--conf", conf_arg]
    for assignment in job_sets:
        argv += ["--set", assignment]
    return dict(profile.env), argv


def render(env: dict[str, str], argv: list[str], secrets: tuple[str, ...] = ()) -> str:
    """The command as a shell line; a KEY=VALUE argument whose value is a secret shows ***."""
    shown = list(argv)
    for i, word in enumerate(argv):
        for secret in secrets:
            if secret and word.endswith("=" + secret):
                shown[i] = word[: -len(secret)] + "***"
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(shown)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy/submit.py", description=__doc__.splitlines()[0])
    parser.add_argument("stage", help="stage name (ingest, features, ...) or path of a job script")
    parser.add_argument("--profile", required=True, help="a profile of deploy/profiles.yaml")
    parser.add_argument("--conf", type=Path, default=PROJECT_ROOT / "conf" / "cluster.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key of the job (passed to the job)")
    parser.add_argument("--package", choices=PACKAGES, help="default: the profile's")
    parser.add_argument("--master", help="override the profile's master URL")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="extra spark-submit --conf pair")
    parser.add_argument("--build-dir", type=Path, default=PROJECT_ROOT / "build" / "submit")
    parser.add_argument("--venv", type=Path, default=PROJECT_ROOT / ".venv",
                        help="environment packed in venv mode")
    parser.add_argument("--dry-run", action="store_true", help="print the command, build nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        profiles = load_profiles()
        if args.profile not in profiles:
            raise ConfigError(f"unknown profile {args.profile!r}; profiles are {', '.join(profiles)}")
        for kv in args.spark_conf:
            if "=" not in kv:
                raise ConfigError(f"--spark-conf expects KEY=VALUE, got {kv!r}")
        profile = profiles[args.profile]
        package = args.package or profile.package
        artifacts = Artifacts.planned(package, args.build_dir.resolve())
        env, command = build_command(args.stage, profile, args.conf, args.sets, package, artifacts,
                                     args.master, args.spark_conf)
        if package == "venv" and not args.dry_run:
            check_packable(args.venv.resolve())
    except ConfigError as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    secret = os.environ.get(load_config(args.conf, args.sets).user_hash_key_env, "")
    print(render(env, command, (secret,)), flush=True)
    if args.dry_run:
        return 0
    artifacts.build(args.venv)
    return subprocess.run(command, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main())
