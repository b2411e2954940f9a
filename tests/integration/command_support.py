"""Shared by the command target tests: an executor running as root must run programs as another
user (EXECUTOR_COMMAND_USER), so the tests give it uid 65534 when they run as root; programs then
need a Python and a directory that user can reach."""

from __future__ import annotations

import os
import shutil
from typing import Any

from services.executor.isolation import COMMAND_PATH

NOBODY = 65534
ROOT_TESTS = os.geteuid() == 0
# What the tests add to an executor's settings (and environment) that enables command targets.
COMMAND_USER: dict[str, Any] = {"executor_command_user": str(NOBODY)} if ROOT_TESTS else {}
COMMAND_USER_ENV: dict[str, str] = {"EXECUTOR_COMMAND_USER": str(NOBODY)} if ROOT_TESTS else {}


def command_python() -> str:
    """A python3 on the programs' PATH: this process's own may live where only root may enter."""
    found = shutil.which("python3", path=COMMAND_PATH)
    assert found, f"the command target tests need a python3 on {COMMAND_PATH}"
    return found
