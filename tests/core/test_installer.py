"""The worker environment's installer and the record the plugin reads back.

Runs the real installer as a subprocess with Debian's /usr/bin/python3 (the Python QGIS
runs). Nothing here downloads torch: ``--check`` verifies the .venv that ``make setup``
made, and the failure case is a bare venv.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest

from sn6_footprints import install
from sn6_footprints.worker import environment, protocol

REPO = Path(__file__).resolve().parents[2]
DEV_ENV = REPO / ".venv"
SYSTEM_PYTHON = "/usr/bin/python3"


def run_installer(*args: str, env: dict | None = None, timeout_s: float = 300):
    return subprocess.run([SYSTEM_PYTHON, "-m", "sn6_footprints.install", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s, env=env)


# Real nvidia-smi lines (name, driver) -> expected variant on Linux.
@pytest.mark.parametrize("smi_output, variant", [
    ("NVIDIA H100 80GB HBM3, 570.86.15\n", "cu128"),
    ("NVIDIA GeForce RTX 4090, 565.57.01\n", "cu126"),
    ("NVIDIA GeForce RTX 3060, 560.35.03\n", "cu126"),
    ("NVIDIA A100-SXM4-40GB, 550.54.15\n", "cu124"),
    ("NVIDIA A10G, 535.183.01\n", "cu121"),
    ("Tesla T4, 470.182.03\n", "cu118"),
    ("Tesla V100-SXM2-16GB, 525.85.12\nTesla V100-SXM2-16GB, 525.85.12\n", "cu118"),
    ("Quadro K2200, 390.157\n", "cpu"),
    ("", "cpu"),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", "cpu"),
])
def test_auto_variant_follows_the_driver(smi_output, variant):
    choice = install.torch_choice("auto", smi_output, "linux")
    assert choice["variant"] == variant
    if variant != "cpu":
        assert choice["gpus"][0]["name"] in choice["reason"]
        args = install.torch_index_args(variant, install.torch_index_url(variant, None), "linux")
        assert args == ["--index-url", f"https://download.pytorch.org/whl/{variant}",
                        "--extra-index-url", "https://pypi.org/simple"]


def test_windows_driver_thresholds_and_macos():
    # Windows numbers its drivers differently: 551.23 is short of CUDA 12.4's 551.61.
    assert install.choose_variant("551.23", "win32")[0] == "cu121"
    assert install.choose_variant("572.16", "win32")[0] == "cu128"
    assert install.choose_variant("570.86.15", "darwin")[0] == "cpu"
    assert "update the NVIDIA driver" in install.choose_variant("390.157", "linux")[1]


def test_cpu_index_only_when_it_answers_and_explicit_choices_win():
    cpu_index = install.torch_index_url("cpu", None)
    assert install.torch_index_args("cpu", cpu_index, "linux") == ["--extra-index-url", cpu_index]
    assert install.torch_index_args("cpu", cpu_index, "linux", reachable=False) == []
    assert install.torch_index_args("cpu", cpu_index, "darwin") == []
    assert install.torch_index_url("cu126", "none") is None
    assert install.torch_choice("cu121", "NVIDIA A10G, 570.86.15", "linux")["variant"] == "cu121"
    assert install.needs_torch_reinstall("2.13.0+cpu", "cu126")
    assert not install.needs_torch_reinstall("2.13.0+cpu", "cpu")
    assert not install.needs_torch_reinstall("2.13.0", "cu126")  # PyPI's build: unlabelled
    assert not install.needs_torch_reinstall(None, "cpu")


def test_plan_json_names_the_env_and_changes_nothing(tmp_path):
    profile, env = tmp_path / "profile", tmp_path / "new env"
    completed = run_installer("--plan", "--json", "--profile", str(profile), "--env", str(env),
                              "--cuda", "cpu", "--torch-index", "none")
    assert completed.returncode == 0, completed.stderr
    plan = json.loads(completed.stdout)
    assert plan["env"] == str(env) and plan["create_venv"] is True
    assert plan["base_python"] and Path(plan["base_python"]).name.startswith("python3")
    assert plan["torch"]["variant"] == "cpu" and plan["torch"]["index_args"] == []
    assert "torch==2.13.0" in plan["packages"]
    assert plan["download_estimate_mb"]["total"] > 0 and "estimate" in plan["download_estimate_mb"]["note"]
    assert plan["disk"]["free_mb"] > 0
    assert not profile.exists() and not env.exists()

    default = json.loads(run_installer("--plan", "--json", "--profile", str(profile)).stdout)
    assert default["env"] == str(environment.default_env_dir(profile))
    assert default["torch"]["requested"] == "auto" and default["torch"]["reason"]


def test_check_records_the_dev_env(tmp_path):
    profile = tmp_path / "profile"
    completed = run_installer("--check", "--env", str(DEV_ENV), "--profile", str(profile))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    record = environment.read_record(profile)
    assert record["env"] == str(DEV_ENV)
    assert record["requirements_sha256"] == install.file_sha256(install.REQUIREMENTS)
    assert record["cuda"] in (True, False) and "T" in record["verified"]
    versions = record["versions"]
    for name in ("torch", "rasterio", "shapely", "numpy"):
        assert versions[name] == metadata.version(name), name
    import rasterio
    assert versions["gdal"] == rasterio.__gdal_version__
    ran = subprocess.run([record["python"], "-c", "import sys; print(sys.prefix)"],
                         capture_output=True, text=True, check=True)
    assert Path(ran.stdout.strip()) == DEV_ENV
    assert environment.resolve_worker_python(profile) == Path(record["python"])
    assert environment.install_log_path(profile).is_file()


def test_check_with_events_speaks_the_worker_protocol(tmp_path):
    completed = run_installer("--check", "--events", "--env", str(DEV_ENV),
                              "--profile", str(tmp_path))
    events = [protocol.decode(line) for line in completed.stdout.splitlines()]
    assert None not in events, completed.stdout
    assert events[-1]["event"] == "result" and events[-1]["data"]["action"] == "check"
    assert any(event["event"] == "progress" for event in events)


def test_bare_venv_fails_in_one_line_naming_the_packages(tmp_path):
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)
    completed = run_installer("--check", "--env", str(bare), "--profile", str(tmp_path / "p"))
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr + completed.stdout
    assert "torch" in lines[0] and "numpy" in lines[0] and str(bare) in lines[0]
    assert "run the installer" in lines[0]
    assert environment.read_record(tmp_path / "p") is None

    missing = run_installer("--check", "--env", str(tmp_path / "nowhere"),
                            "--profile", str(tmp_path / "p"))
    assert missing.returncode == 2 and "no Python environment" in missing.stderr


def test_resolve_order_setting_then_record_then_default_env(tmp_path):
    profile = tmp_path / "profile"
    assert environment.resolve_worker_python(profile) is None
    default_python = environment.env_python(environment.default_env_dir(profile))
    default_python.parent.mkdir(parents=True)
    default_python.symlink_to(sys.executable)
    assert environment.resolve_worker_python(profile) == default_python

    recorded = tmp_path / "recorded" / "bin" / "python"
    recorded.parent.mkdir(parents=True)
    recorded.symlink_to(sys.executable)
    environment.write_record(profile, {"env": str(recorded.parents[1]), "python": str(recorded)})
    assert environment.resolve_worker_python(profile) == recorded

    assert environment.resolve_worker_python(profile, str(DEV_ENV)) == DEV_ENV / "bin" / "python"
    assert environment.resolve_worker_python(profile, str(recorded)) == recorded  # an interpreter

    recorded.unlink()  # a stale record falls back to the default env
    assert environment.resolve_worker_python(profile) == default_python
    assert environment.resolve_worker_python(profile, "/usr/bin/qgis") is None


def test_record_round_trip_and_unreadable_record(tmp_path):
    environment.write_record(tmp_path, {"env": "x", "versions": {"torch": "2.13.0"}})
    assert environment.read_record(tmp_path) == {"env": "x", "versions": {"torch": "2.13.0"}}
    assert [p.name for p in environment.plugin_data_dir(tmp_path).iterdir()] == ["worker.json"]
    environment.record_path(tmp_path).write_text("{half", encoding="utf-8")
    assert environment.read_record(tmp_path) is None


def test_default_profile_dir_per_os():
    home = {"HOME": "/home/u"}
    assert environment.default_profile_dir("linux", home) == Path(
        "/home/u/.local/share/QGIS/QGIS3/profiles/default")
    assert environment.default_profile_dir("linux", {**home, "XDG_DATA_HOME": "/x"}) == Path(
        "/x/QGIS/QGIS3/profiles/default")
    assert environment.default_profile_dir("darwin", home) == Path(
        "/home/u/Library/Application Support/QGIS/QGIS3/profiles/default")
    assert environment.default_profile_dir("win32", {"APPDATA": "C:/Users/u/AppData/Roaming"}) == Path(
        "C:/Users/u/AppData/Roaming/QGIS/QGIS3/profiles/default")
    assert environment.env_python(Path("e"), "win32") == Path("e/Scripts/python.exe")


def test_base_python_matches_the_running_version():
    python = environment.base_python()
    ran = subprocess.run([str(python), "-c", "import sys; print(sys.prefix == sys.base_prefix, "
                          "sys.version_info[:2])"], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == f"True {tuple(sys.version_info[:2])}"


def test_worker_environ_is_clean_and_finds_the_plugin(tmp_path):
    polluted = {**os.environ, "PYTHONHOME": "/usr/share/qgis/python-home", "GDAL_DATA": "/nowhere",
                "PROJ_LIB": "/nowhere", "PYTHONPATH": "/usr/share/qgis/python", "LD_PRELOAD": "x.so"}
    environ = environment.worker_environ(polluted)
    for name in ("PYTHONHOME", "GDAL_DATA", "PROJ_LIB", "LD_PRELOAD"):
        assert name not in environ
    assert environ["PYTHONPATH"] == str(REPO) and environ["PYTHONNOUSERSITE"] == "1"
    ran = subprocess.run([str(environment.env_python(DEV_ENV)), "-c",
                          "import sn6_footprints.core, sys; print(sn6_footprints.core.__file__)"],
                         capture_output=True, text=True, env=environ, cwd=tmp_path, check=False)
    assert ran.returncode == 0, ran.stderr
    assert Path(ran.stdout.strip()).is_relative_to(REPO / "sn6_footprints")
