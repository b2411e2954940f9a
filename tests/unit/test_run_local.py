"""tools/run_local.py's development secrets (admin token, sealing key): created once, private, then
reused; and the command user a root `make run` gives its executors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from schedcore.sealing import Sealer
from tools.run_local import command_user_env, dev_secret_keys, dev_token


def test_the_dev_token_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "dev-admin-token"
    first = dev_token(path)
    assert first.startswith("tsk_") and len(first) == 47
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dev_token(path) == first
    path.write_text("")  # an emptied file gets a new token
    assert dev_token(path) not in ("", first)


def test_the_dev_sealing_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret-keys"
    key = dev_secret_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dev_secret_keys(path) == key
    sealer = Sealer([key])  # a usable SECRET_KEYS value
    assert sealer.open(sealer.seal("v")) == "v"


def test_a_root_make_run_with_command_targets_runs_them_as_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECUTOR_COMMAND_USER", raising=False)
    monkeypatch.setenv("EXECUTOR_COMMAND_TARGETS", "true")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert command_user_env() == {"EXECUTOR_COMMAND_USER": "nobody"}
    monkeypatch.setenv("EXECUTOR_COMMAND_USER", "1234")  # your choice stands (os.environ passes it)
    assert command_user_env() == {}
    monkeypatch.delenv("EXECUTOR_COMMAND_USER")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: programs run as you
    assert command_user_env() == {}
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("EXECUTOR_COMMAND_TARGETS", "false")
    assert command_user_env() == {}
