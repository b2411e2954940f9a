"""The Lua prelude's STATUS table is the protobuf enum ExecutionStatus, and scripts use it."""

from __future__ import annotations

import re
from pathlib import Path

from schedcore.gen.scheduler.v1 import execution_pb2
from schedcore.store import scripts

LUA = Path(scripts.__file__).parent / "lua"


def _status_table() -> dict[str, int]:
    body = re.search(r"local STATUS = \{(.*?)\}", scripts.PRELUDE, re.S)
    assert body, "prelude.lua defines no STATUS table"
    return {name: int(code) for name, code in re.findall(r"(\w+) = '(\d+)'", body.group(1))}


def test_status_codes_are_the_protobuf_enum() -> None:
    enum = execution_pb2.ExecutionStatus
    expected = {
        name.removeprefix("EXECUTION_STATUS_"): number
        for name, number in enum.items()
        if number != enum.Value("EXECUTION_STATUS_UNSPECIFIED")
    }
    assert _status_table() == expected


def test_no_script_writes_a_literal_status() -> None:
    literal = re.compile(r"'status',\s*'?\d")
    offenders = [p.name for p in LUA.glob("*.lua") if literal.search(p.read_text())]
    assert offenders == []


def test_alert_kinds_are_the_protobuf_enum() -> None:
    """Every kind a script raises is stored as AlertKind's number, and named in a notification
    id as the enum's name in lower case (docs/alerts.md)."""
    from schedcore import pb

    body = re.search(r"local ALERT = \{(.*?)\n\}", scripts.PRELUDE, re.S)
    assert body, "prelude.lua defines no ALERT table"
    table = re.findall(r"(\w+) = \{'(\d+)', '(\w+)'\}", body.group(1))
    assert len(table) == 5
    for name, number, id_name in table:
        assert pb.AlertKind.Value(f"ALERT_KIND_{name}") == int(number)
        assert id_name == name.lower()
