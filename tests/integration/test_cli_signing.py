"""schedctl --signing-secret (docs/cli.md): stored, never shown, kept by an update that does not
name it, replaced by one that does, removed by --remove-signing-secrets."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from schedcore import pb
from schedcore.store.keys import Keys
from tests.integration.test_cli import ok, schedctl
from tests.support import ServiceThread


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def stored(rds, task_id: str) -> list[str]:
    raw = rds.hget(Keys().task(task_id), "spec")
    assert raw is not None
    return list(pb.Task.FromString(raw).target.http.signing_secrets)


def test_signing_secrets_from_flags_and_files_are_stored_and_never_shown(
    api: ServiceThread, rds, tmp_path: Path
) -> None:
    addr = api.target
    old, new, other = whsec(), whsec(), whsec()
    (tmp_path / "old").write_text(old + "\n")
    args = ["create", "--name", "s", "--cron", "@daily", "--http-url", "https://example.com/hook"]
    shown = ok(addr, *args, "--signing-secret", f"@{tmp_path / 'old'}", "--signing-secret", new)
    task_id = next(line.split()[-1] for line in shown.splitlines() if line.startswith("id"))
    assert stored(rds, task_id) == [old, new]
    rows = [line.split() for line in shown.splitlines() if "signing secret" in line]
    assert rows == [["signing", "secret:", "(secret)"]] * 2
    for out in (shown, ok(addr, "get", task_id), ok(addr, "get", task_id, "-o", "json")):
        assert not any(s in out or s.removeprefix("whsec_") in out for s in (old, new))

    ok(addr, "update", task_id, "--header", "X-Other: 1", "--http-url", "https://example.com/moved")
    assert stored(rds, task_id) == [old, new], "an update that does not name them keeps them"
    ok(addr, "update", task_id, "--signing-secret", other)
    assert stored(rds, task_id) == [other], "the ones given replace the stored ones"
    ok(addr, "update", task_id, "--remove-signing-secrets")
    assert stored(rds, task_id) == []

    both = schedctl(addr, "update", task_id, "--remove-signing-secrets", "--signing-secret", other)
    assert both.returncode == 2 and "one or the other" in both.stderr
    log = schedctl(addr, "create", "--name", "l", "--cron", "@daily", "--signing-secret", other)
    assert log.returncode == 2 and "need an http target" in log.stderr
    short = "whsec_" + base64.b64encode(b"short").decode()
    bad = schedctl(addr, *args, "--signing-secret", short)
    assert bad.returncode == 13 and "task.target.http.signing_secrets[0]" in bad.stderr
    assert short not in bad.stderr and other not in bad.stderr
