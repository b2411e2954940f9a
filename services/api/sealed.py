"""Secret values on their way through the api: a target's (schedcore/sealing.py, `secret_maps`)
and a notification channel's (`channel_secrets`).

Clients send them in the clear and read back names only (empty values; a list of signing secrets
is a map by position). On UpdateTask (UpdateChannel) a name sent with an empty value keeps its
stored value, which is opened here (to be validated in the clear and sealed again with the first
key) and nowhere else in the api.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping

from schedcore import pb
from schedcore.errors import FailedPrecondition, Violations
from schedcore.sealing import PREFIX, Sealer, SealError, channel_secrets, is_sealed, secret_maps


def unsealed_values(target: pb.Target, path: str = "task.target") -> None:
    """A client's secret values must not look sealed (only the api seals)."""
    _unsealed(
        (
            (f"{path}.{where}[{name}]", value)
            for where, values in secret_maps(target)
            for name, value in values.items()
        )
    )


def unsealed_channel(channel: pb.Channel) -> None:
    """A client's channel secrets must not look sealed."""
    _unsealed((f"channel.{path}", value) for path, value in channel_secrets(channel).items())


def _unsealed(values: Iterable[tuple[str, str]]) -> None:
    v = Violations()
    for path, value in values:
        if is_sealed(value):
            v.add(path, f"value must not start with {PREFIX!r}")
    v.raise_if_any()


def keep_stored(sealer: Sealer, new: pb.Target, stored: pb.Target) -> None:
    """UpdateTask: each secret `new` sends with an empty value takes its stored value (opened);
    one left out is removed; a new value replaces. FailedPrecondition for a stored value that
    cannot be opened here."""
    if new.WhichOneof("kind") != stored.WhichOneof("kind"):
        return
    for (where, values), (_, kept) in zip(secret_maps(new), secret_maps(stored), strict=True):
        _keep(sealer, values, kept, f"task.target.{where}[{{name}}]")


def keep_stored_channel(sealer: Sealer, new: pb.Channel, stored: pb.Channel) -> None:
    """UpdateChannel: as keep_stored, for a channel of the same kind (a webhook's signing secret
    sent empty keeps the stored one at its position; a Slack webhook_url sent empty keeps it)."""
    if new.WhichOneof("kind") == stored.WhichOneof("kind"):
        _keep(sealer, channel_secrets(new), channel_secrets(stored), "channel.{name}")


def _keep(sealer: Sealer, values: MutableMapping[str, str], kept: Mapping[str, str], path: str) -> None:
    """`path`: each value's field path, with `{name}` where its name goes."""
    for name, value in list(values.items()):
        if value or name not in kept:
            continue
        try:
            values[name] = sealer.open(kept[name])
        except SealError as exc:
            raise FailedPrecondition(
                f"{path.format(name=name)}: the stored value cannot be kept: {exc}; send the value again"
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
