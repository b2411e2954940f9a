"""tools/run_local.py's development secrets (admin token, sealing key): created once, private, then
reused."""

from __future__ import annotations

import stat
from pathlib import Path

from schedcore.sealing import Sealer
from tools.run_local import dev_secret_keys, dev_token


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
