"""The store's reply for a repeated request key, "<task id>:<fingerprint>", parsed in one place."""

from __future__ import annotations

import pytest

from schedcore.store.tasks import PriorTask, RequestConflict


def test_parses_id_and_fingerprint() -> None:
    assert PriorTask.parse(b"0123abcd:f00d") == PriorTask(task_id="0123abcd", fingerprint="f00d")


def test_a_reply_without_a_fingerprint_is_refused() -> None:
    with pytest.raises(ValueError, match="0123abcd"):
        PriorTask.parse(b"0123abcd")


def test_a_conflict_carries_the_parsed_prior() -> None:
    conflict = RequestConflict(2, PriorTask.parse(b"0123abcd:f00d"))
    assert conflict.prior.task_id == "0123abcd"
    assert "0123abcd" in str(conflict)
