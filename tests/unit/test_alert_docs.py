"""docs/alerts.md's verification snippets (Python and Node) accept a notification signed by the
suite (schedcore/signing.py, the scheme the scheduler sends), with either of two secrets while a
receiver rotates, and refuse a tampered body, another secret and a stale timestamp."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import time

from schedcore import signing
from tests.alert_receiver import snippet, verify


def secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signed(secrets_: list[str], body: bytes, at: int | None = None) -> dict[str, str]:
    return signing.signature_headers(
        secrets_, "failing.0123456789abcdef-1765166400000.c1", at or int(time.time()), body
    )


BODY = b'{"type":"task.failing","data":{"message":"3 executions in a row ended FAILED"}}'


def test_the_python_snippet_accepts_the_suites_signature_and_nothing_else() -> None:
    old, new = secret(), secret()
    headers = signed([new, old], BODY)
    assert verify(old, headers, BODY) and verify(new, headers, BODY)  # rotation: both hold
    assert not verify(old, headers, BODY.replace(b"FAILED", b"FAILEd"))
    assert not verify(secret(), headers, BODY)
    assert not verify(old, signed([old], BODY, int(time.time()) - 600), BODY)  # replayed late


def test_the_node_snippet_agrees() -> None:
    node = shutil.which("node")
    assert node, "node is not installed (apt-get install nodejs)"
    key = secret()
    cases = [
        (key, signed([key], BODY), BODY, True),
        (key, signed([secret(), key], BODY), BODY, True),
        (key, signed([key], BODY), BODY.replace(b"FAILED", b"FAILEd"), False),
        (secret(), signed([key], BODY), BODY, False),
        (key, signed([key], BODY, int(time.time()) - 600), BODY, False),
    ]
    program = snippet("js") + (
        "const cases = JSON.parse(process.argv[1]);\n"
        "console.log(JSON.stringify(cases.map(([s, h, b]) => verify(s, h, b))));\n"
    )
    argument = json.dumps([[s, h, b.decode()] for s, h, b, _ in cases])
    out = subprocess.run(
        [node, "-e", program, argument], capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(out.stdout) == [want for *_, want in cases]
