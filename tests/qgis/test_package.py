"""`make package`: the ZIP a user installs with Plugins -> Install from ZIP and the plugins site
accepts: one top folder, complete metadata, the resources, no tests, caches or dev files."""
from __future__ import annotations

import ast
import configparser
import subprocess
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from tests.conftest import REPO_ROOT

# What the plugins site refuses a plugin without, then what this plugin promises in addition.
REQUIRED = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository")
ALSO = ("hasProcessingProvider", "category", "tags", "homepage", "tracker", "changelog", "icon")
MAX_BYTES = 10 * 1024 * 1024
TOP = "sn6_footprints"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    build, dist = tmp_path_factory.mktemp("build"), tmp_path_factory.mktemp("dist")
    completed = subprocess.run(["make", "-s", "package", f"BUILD={build}", f"DIST={dist}"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    zips = list(dist.glob("sn6_footprints-*.zip"))
    assert len(zips) == 1, zips
    return zips[0]


@pytest.fixture(scope="module")
def names(package) -> list[str]:
    with zipfile.ZipFile(package) as archive:
        assert archive.testzip() is None
        return archive.namelist()


@pytest.fixture(scope="module")
def metadata(package) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    with zipfile.ZipFile(package) as archive:
        parser.read_string(archive.read(f"{TOP}/metadata.txt").decode("utf-8"))
    return parser["general"]


def test_zip_has_one_top_folder_and_stays_small(package, names):
    assert {PurePosixPath(name).parts[0] for name in names} == {TOP}
    assert package.stat().st_size < MAX_BYTES
    assert f"{TOP}/__init__.py" in names


def test_metadata_has_every_field_the_plugins_site_needs(package, metadata, names):
    for field in REQUIRED + ALSO:
        assert metadata.get(field, "").strip(), f"metadata.txt lacks {field}"
    assert metadata["hasProcessingProvider"].strip().lower() == "yes"
    assert package.name == f"sn6_footprints-{metadata['version'].strip()}.zip"
    assert f"{TOP}/{metadata['icon'].strip()}" in names
    assert metadata["version"].strip() in metadata["changelog"]
    assert "Needs PyTorch" not in metadata["about"]


def test_zip_holds_the_resources_and_requirements(names):
    for path in ("metadata.txt", "resources/icon.svg", "resources/styles/footprints.qml",
                 "resources/models/extract_and_score.model3", "requirements.txt", "__main__.py"):
        assert f"{TOP}/{path}" in names, path
    assert any(name.startswith(f"{TOP}/models/") and name.endswith(".pt") for name in names)  # bundled weights
    assert f"{TOP}/LICENSE" in names  # the plugins site requires a (GPL-compatible) licence file


def test_zip_has_no_tests_caches_or_dev_files(names):
    for name in names:
        parts = PurePosixPath(name).parts
        assert "tests" not in parts and "__pycache__" not in parts and ".pytest_cache" not in parts, name
        assert not name.endswith((".pyc", ".resume.pt", "~", ".orig", ".rej", ".swp")), name
        assert not any(part.startswith(".") for part in parts), name  # .git, .venv, .ci, editor files
    for dev in ("Makefile", "requirements-dev.txt", "pytest.ini", "scripts/", "bench/", "docs/"):
        assert not any(name.startswith(f"{TOP}/{dev}") for name in names), dev


def test_the_qgis_layer_never_prints(package, names):
    """Inside QGIS, messages go to the message log or the Processing feedback, never to print()
    (the plugins site's rule); the core and the command line may print."""
    qgis_layer = [name for name in names if name.endswith(".py") and (
        name == f"{TOP}/plugin.py" or name.startswith((f"{TOP}/processing_provider/", f"{TOP}/ui/")))]
    assert f"{TOP}/plugin.py" in qgis_layer
    with zipfile.ZipFile(package) as archive:
        for name in qgis_layer:
            tree = ast.parse(archive.read(name).decode("utf-8"), name)
            prints = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
                      and isinstance(node.func, ast.Name) and node.func.id == "print"]
            assert not prints, f"print() in {name} at line(s) {prints}"
