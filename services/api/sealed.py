"""A target's secret values (schedcore/sealing.py, `secret_maps`) on their way through the api.

Clients send them in the clear and read back names only (empty values; a list of signing secrets
is a map by position). On UpdateTask a name sent with an empty value keeps its stored value,
which is opened here (to be validated in the clear and sealed again with the first key) and
nowhere else in the api.
"""

from __future__ import annotations

from schedcore import pb
from schedcore.errors import FailedPrecondition, Violations
from schedcore.sealing import PREFIX, Sealer, SealError, is_sealed, secret_maps


def unsealed_values(target: pb.Target, path: str = "task.target") -> None:
    """A client's secret values must not look sealed (only the api seals)."""
    v = Violations()
    for where, values in secret_maps(target):
        for name, value in values.items():
            if is_sealed(value):
                v.add(f"{path}.{where}[{name}]", f"value must not start with {PREFIX!r}")
    v.raise_if_any()


def keep_stored(sealer: Sealer, new: pb.Target, stored: pb.Target) -> None:
    """UpdateTask: each secret `new` sends with an empty value takes its stored value (opened);
    one left out is removed; a new value replaces. FailedPrecondition for a stored value that
    cannot be opened here."""
    if new.WhichOneof("kind") != stored.WhichOneof("kind"):
        return
    for (where, values), (_, kept) in zip(secret_maps(new), secret_maps(stored), strict=True):
        for name, value in list(values.items()):
            if value or name not in kept:
                continue
            try:
                values[name] = sealer.open(kept[name])
            except SealError as exc:
                raise FailedPrecondition(
                    f"task.target.{where}[{name}]: the stored value cannot be kept: {exc}; "
                    "send the value again"
                ) from None


def changes(sealer: Sealer, new: pb.Target, stored: pb.Target) -> bool:
    """Whether `new` (secrets in the clear) differs from the stored target. A stored secret that
    cannot be opened here counts as a change."""
    old = pb.Target()
    old.CopyFrom(stored)
    try:
        for _, values in secret_maps(old):
            for name, value in list(values.items()):
                values[name] = sealer.open(value)
    except SealError:
        return True
    return new != old
