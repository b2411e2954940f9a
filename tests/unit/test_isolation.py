"""services/executor/isolation.py: who command targets run as, and which files they could read."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from schedcore.settings import Settings, SettingsError
from services.executor.isolation import CommandUser, command_user, readable_by, resolve_user

NOBODY = CommandUser(65534, 65534, "/")


def test_names_and_numbers_resolve() -> None:
    assert resolve_user("nobody") == NOBODY  # its home, /nonexistent, does not exist
    assert resolve_user("65534") == NOBODY
    assert resolve_user("65534:100") == CommandUser(65534, 100, "/")
    # A uid the password database does not know: its gid defaults to the same number.
    assert resolve_user("54321") == CommandUser(54321, 54321, "/")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no-such-user-here", "no user named 'no-such-user-here' on this machine"),
        ("root", "'root' is root (uid or gid 0)"),
        ("0", "'0' is root"),
        ("65534:0", "'65534:0' is root"),
        ("99999999999999999999", "is not a user name or uid[:gid]"),
    ],
)
def test_unusable_users_name_the_variable(spec: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        resolve_user(spec)
    assert str(info.value).startswith("EXECUTOR_COMMAND_USER: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("mode", "uid", "gid", "readable"),
    [
        (0o600, 0, 0, False),
        (0o640, 0, 0, False),  # a group the user is not in
        (0o604, 0, 0, True),
        (0o640, 0, 65534, True),
        (0o400, 65534, 0, True),
        (0o044, 65534, 0, False),  # the owner's own bits decide for the owner
    ],
)
def test_readable_by_follows_owner_group_and_others(
    tmp_path: Path, mode: int, uid: int, gid: int, readable: bool
) -> None:
    path = tmp_path / "key.pem"
    path.write_text("secret")
    os.chown(path, uid, gid)
    path.chmod(mode)
    assert readable_by(str(path), NOBODY) is readable


def test_no_user_is_needed_without_command_targets() -> None:
    assert command_user(Settings(grpc_plaintext=True)) is None
    assert command_user(Settings(grpc_plaintext=True, executor_command_user="no-such-user-here")) is None


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    settings = Settings(
        grpc_plaintext=True,
        executor_command_targets=True,
        executor_command_user="nobody",
        tls_key_file=str(tmp_path / "absent.key"),
    )
    with pytest.raises(SettingsError, match=r"^TLS_KEY_FILE: cannot stat '.*absent.key': No such file"):
        command_user(settings)


def test_a_non_root_executor_without_a_user_warns_that_programs_can_read_its_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    settings = Settings(grpc_plaintext=True, executor_command_targets=True)
    assert command_user(settings) is None
    assert not caplog.records
    assert command_user(dataclasses.replace(settings, tls_key_file="/etc/tls/tls.key")) is None
    assert "they can read TLS_KEY_FILE" in caplog.text
