"""tasksched_build_info: the version comes from the installed project's metadata, else "unknown"."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

from schedcore import metrics

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_pyprojects() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == metrics.DISTRIBUTION
    assert metrics.project_version() == project["version"]  # make deps installs the project


def test_without_the_installed_project_the_version_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert metrics.project_version() == "unknown"
