"""`pip install .` (not editable) gives a package that runs from any folder: the files the
CLI reads at run time (the Avro schemas, the pom that pins the local Kafka broker) ship in
the wheel, and nothing is looked up relative to the source checkout or the current folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the sources: an in-tree build would reuse a stale build/ directory.
    source = out / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "build", "dist", "*.egg-info", "__pycache__", "*-data", "bench", "tests"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("connector_recovery-*.whl")
    return built


def test_the_wheel_holds_the_run_time_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "agents/broker/pom.xml" in names
    assert "agents/connect/pom.xml" in names
    assert "agents/dashboard/static/dashboard.js" in names
    assert "agents/dashboard/static/dashboard.css" in names
    for chart_file in (
        "charts.js",
        "favicon.svg",
        "vendor/uPlot.iife.min.js",
        "vendor/uPlot.min.css",
    ):
        assert f"agents/dashboard/static/{chart_file}" in names
    assert "agents/dashboard/static/vendor/uPlot.LICENSE" in names
    schemas = {p.relative_to(REPO).as_posix() for p in (REPO / "schemas").rglob("*.avsc")}
    assert schemas
    assert schemas <= names


def test_the_installed_package_runs_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run(
        [*install, "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    # The installed copy first on the path (dependencies from this environment), as from a
    # `pip install` of the package: no source checkout in sight.
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("CR_LOCAL_DIR", None)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import agents.broker.local as local, schemas;"
            "print(local.__file__); print(local.kafka_version()); print(local.HOME);"
            "print(schemas.SCHEMA_DIR)",
        ],
        env=env,
        cwd=empty,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    module, version, home, schema_dir = probe.stdout.splitlines()
    assert Path(module).is_relative_to(site)
    assert version.count(".") == 2
    assert Path(home) == tmp_path / "state" / "connector-recovery"  # not inside site-packages
    assert Path(schema_dir).is_relative_to(site)
    status = subprocess.run(
        [sys.executable, "-m", "agents.cli", "kafka", "status", "--port", "1"],
        env=env,
        cwd=empty,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("down (port 1)")
    assert not list(empty.iterdir())
