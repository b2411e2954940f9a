"""Signing secrets of http targets (docs/security.md, "Signed http calls"): the signer against the
published Standard Webhooks vector, the form the api accepts, and the secret-value steps
(seal, keep on update, redact) they share with secret headers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from schedcore import pb
from schedcore.errors import InvalidArgument
from schedcore.sealing import Sealer, is_sealed, new_key, secret_maps
from schedcore.signing import signature_headers
from schedcore.store.tasks import redact
from services.api import sealed
from tests.unit.test_validation import fields_of, http_task, valid, violations
from ui import taskform as tf

# The test vector of the Standard Webhooks reference libraries (and Svix's).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
PATH = "task.target.http.signing_secrets"


def whsec(n: int, fill: bytes = b"k") -> str:
    return "whsec_" + base64.b64encode(fill * n).decode()


def test_the_signer_reproduces_the_published_vector_and_signs_with_each_secret() -> None:
    body = b'{"test": 2432232314}'
    assert signature_headers([VECTOR_SECRET], VECTOR_ID, 1614265330, body) == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_SIGNATURE,
    }
    both = signature_headers([whsec(32), VECTOR_SECRET], VECTOR_ID, 1614265330, body)
    first, second = both["webhook-signature"].split(" ")
    assert first.startswith("v1,") and first != VECTOR_SIGNATURE and second == VECTOR_SIGNATURE


@pytest.mark.parametrize(
    "secret",
    [
        "",
        base64.b64encode(b"k" * 32).decode(),  # no prefix
        "whsec_" + base64.b64encode(b"k" * 32).decode().rstrip("="),  # padding dropped
        "whsec_not*base64!",
        whsec(23),
        whsec(65),
        "WHSEC_" + base64.b64encode(b"k" * 32).decode(),
    ],
    ids=["empty", "no-prefix", "unpadded", "not-base64", "23-bytes", "65-bytes", "upper-prefix"],
)
def test_a_malformed_secret_is_refused_naming_its_position_never_quoting_it(secret: str) -> None:
    found = violations(http_task(signing_secrets=[whsec(24), secret]))
    assert [field for field, _ in found] == [f"{PATH}[1]"]
    assert "whsec_ followed by the base64 of 24 to 64 bytes" in found[0][1]
    assert not secret or secret not in found[0][1]


def test_one_or_two_well_formed_secrets_pass_and_three_do_not() -> None:
    ok = valid(http_task(signing_secrets=[whsec(24), whsec(64)]))
    assert list(ok.spec.target.http.signing_secrets) == [whsec(24), whsec(64)]
    assert valid(http_task(signing_secrets=[VECTOR_SECRET]))
    assert fields_of(http_task(signing_secrets=[whsec(32)] * 3)) == [PATH]


def test_they_are_sealed_kept_by_position_on_update_and_redacted() -> None:
    sealer = Sealer([new_key()])
    old_a, old_b, new = whsec(32, b"a"), whsec(32, b"b"), whsec(32, b"n")
    stored = pb.Target(http=pb.HttpTarget(url="https://x", signing_secrets=[old_a, old_b]))
    sealer.seal_target(stored)
    assert all(is_sealed(s) for s in stored.http.signing_secrets)
    assert [path for path, _ in secret_maps(stored)] == ["http.secret_headers", "http.signing_secrets"]

    kept = pb.Target(http=pb.HttpTarget(url="https://x", signing_secrets=["", ""]))
    sealed.keep_stored(sealer, kept, stored)
    assert list(kept.http.signing_secrets) == [old_a, old_b]
    assert not sealed.changes(sealer, kept, stored)

    rotated = pb.Target(http=pb.HttpTarget(url="https://x", signing_secrets=[new, ""]))
    sealed.keep_stored(sealer, rotated, stored)
    assert list(rotated.http.signing_secrets) == [new, old_b]

    shorter = pb.Target(http=pb.HttpTarget(url="https://x", signing_secrets=[""]))
    sealed.keep_stored(sealer, shorter, stored)
    assert list(shorter.http.signing_secrets) == [old_a], "the stored ones past the end are removed"
    assert sealed.changes(sealer, shorter, stored)

    task = pb.Task(target=stored)
    assert list(redact(task).target.http.signing_secrets) == ["", ""]


def test_a_secret_that_looks_sealed_is_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        sealed.unsealed_values(pb.Target(http=pb.HttpTarget(signing_secrets=["sealed:v1:x"])))
    assert [v.field for v in info.value.violations] == [f"{PATH}[0]"]


def test_the_dashboard_form_sends_back_one_blank_per_stored_secret() -> None:
    task = pb.Task(name="n")
    task.schedule.cron.expression = "0 3 * * *"
    task.target.http.url = "https://example.com"
    task.target.http.signing_secrets.extend(["", ""])  # as the api shows them
    values = tf.from_task(task, datetime.now(UTC))
    again, errors = tf.to_task(values)
    assert errors == {}
    assert list(again.target.http.signing_secrets) == ["", ""], "an edit in the form keeps them"
