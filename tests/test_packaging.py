"""The built wheel carries its package data: the catalogue data model loads from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_the_data_model(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("clumpcat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "clumpcat/catalogue/catalogue_datamodel.yaml" in names
    assert "clumpcat/py.typed" in names
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = (
        "import clumpcat, sys; from clumpcat.catalogue.datamodel import load_datamodel; "
        "m = load_datamodel(); print(clumpcat.__file__); print(len(m.columns))"
    )
    # -I would drop the venv's site-packages; put the unpacked wheel first instead.
    ran = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(unpacked)!r}); {probe}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    location, n_columns = ran.stdout.split()
    assert Path(location).is_relative_to(unpacked)
    assert int(n_columns) >= 67
