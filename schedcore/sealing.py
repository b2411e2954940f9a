"""Secret target values sealed at rest (docs/security.md, "Safe targets"): an http target's
secret header values and signing secrets, and a command target's secret environment values
(`secret_maps`); and the secrets of a notification channel (`channel_secrets`: a webhook's
signing secrets, a Slack webhook's URL), sealed the same way, with the same keys.

With SECRET_KEYS set (Fernet keys: AES-128-CBC with HMAC-SHA256, from `cryptography`), the api
stores every secret value as `sealed:v1:<Fernet token>` and only the executor, about to send the
request or start the program, opens it: Redis, its backups and the schedulers hold ciphertext.
The first key seals; every key opens, so keys rotate by putting a new one first and dropping the
old one once the tasks have been re-sealed (any update of their target re-seals with the first
key).
Without SECRET_KEYS values are stored as they are (and opened as they are).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, MutableSequence, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from schedcore import pb

PREFIX = "sealed:v1:"


class SealError(Exception):
    """A sealed value that cannot be opened here. The message never quotes the value."""


def check_key(key: str) -> None:
    """ValueError unless `key` is a Fernet key (32 bytes, URL-safe base64)."""
    Fernet(key.encode())


def new_key() -> str:
    return Fernet.generate_key().decode()


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class Positions(MutableMapping[str, str]):
    """A repeated string field seen as a map from positions ("0", "1", ...) to values, so a list
    of secrets goes through the same steps as a map of them (a path reads `field[0]`). Values
    can be replaced in place; removing one is not supported (positions would shift)."""

    def __init__(self, values: MutableSequence[str]) -> None:
        self._values = values

    def _index(self, key: str) -> int:
        if not (key.isdigit() and int(key) < len(self._values)):
            raise KeyError(key)
        return int(key)

    def __getitem__(self, key: str) -> str:
        return self._values[self._index(key)]

    def __setitem__(self, key: str, value: str) -> None:
        self._values[self._index(key)] = value

    def __delitem__(self, key: str) -> None:
        raise TypeError("positions of a list of secrets cannot be removed one by one")

    def __iter__(self) -> Iterator[str]:
        return iter([str(i) for i in range(len(self._values))])

    def __len__(self) -> int:
        return len(self._values)


def secret_maps(target: pb.Target) -> list[tuple[str, MutableMapping[str, str]]]:
    """The target's maps of secret values, each with its field path under the target: the one
    list every step (validate, seal, keep on update, redact, open) walks."""
    if target.HasField("http"):
        return [
            ("http.secret_headers", target.http.secret_headers),
            ("http.signing_secrets", Positions(target.http.signing_secrets)),
        ]
    if target.HasField("command"):
        return [("command.secret_env", target.command.secret_env)]
    return []


class ChannelSecrets(MutableMapping[str, str]):
    """A notification channel's secret values by their field path under the channel
    (`webhook.signing_secrets[0]`, `slack.webhook_url`): the one map every step (validate, seal,
    keep on update, redact, open) walks, as `secret_maps` is for targets. Values are replaced in
    place; none can be removed."""

    def __init__(self, channel: pb.Channel) -> None:
        self._channel = channel

    def _paths(self) -> list[str]:
        kind = self._channel.WhichOneof("kind")
        if kind == "webhook":
            return [
                f"webhook.signing_secrets[{i}]" for i in range(len(self._channel.webhook.signing_secrets))
            ]
        if kind == "slack":
            return ["slack.webhook_url"]
        return []

    def __getitem__(self, path: str) -> str:
        if path not in self._paths():
            raise KeyError(path)
        if path == "slack.webhook_url":
            return self._channel.slack.webhook_url
        return self._channel.webhook.signing_secrets[_position(path)]

    def __setitem__(self, path: str, value: str) -> None:
        if path not in self._paths():
            raise KeyError(path)
        if path == "slack.webhook_url":
            self._channel.slack.webhook_url = value
        else:
            self._channel.webhook.signing_secrets[_position(path)] = value

    def __delitem__(self, path: str) -> None:
        raise TypeError("a channel's secrets cannot be removed one by one")

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths())

    def __len__(self) -> int:
        return len(self._paths())


def _position(path: str) -> int:
    return int(path[path.index("[") + 1 : -1])


def channel_secrets(channel: pb.Channel) -> ChannelSecrets:
    return ChannelSecrets(channel)


def redact_channel(channel: pb.Channel) -> pb.Channel:
    """`channel` with its secrets emptied (one empty string per signing secret kept): every api
    response carrying a channel is built by this."""
    secrets = channel_secrets(channel)
    for path in list(secrets):
        secrets[path] = ""
    return channel


def destination(channel: pb.Channel) -> str:
    """Where a channel sends, as any reader of it may see: a webhook's URL, the email addresses;
    a Slack webhook's URL is its credential (write-only), so it is never shown."""
    kind = channel.WhichOneof("kind")
    if kind == "webhook":
        return channel.webhook.url
    if kind == "email":
        return ", ".join(channel.email.to)
    return "(the webhook URL is secret)" if kind == "slack" else "-"


class Sealer:
    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None

    def seal(self, value: str) -> str:
        if self._fernet is None or not value:
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        if not is_sealed(value):
            return value
        if self._fernet is None:
            raise SealError("it is sealed and SECRET_KEYS is not set here")
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SealError("it was sealed with a key that is not in SECRET_KEYS here") from None

    def open_each(self, values: Mapping[str, str]) -> dict[str, str]:
        """Every value opened; SealError names the first that cannot be (never its value)."""
        out: dict[str, str] = {}
        for name, value in values.items():
            try:
                out[name] = self.open(value)
            except SealError as exc:
                raise SealError(f"{name!r} cannot be used: {exc}") from None
        return out

    def seal_target(self, target: pb.Target) -> None:
        """Seal every secret value of the target in place."""
        for _, values in secret_maps(target):
            self._seal_each(values)

    def seal_channel(self, channel: pb.Channel) -> None:
        """Seal every secret value of the channel in place."""
        self._seal_each(channel_secrets(channel))

    def _seal_each(self, values: MutableMapping[str, str]) -> None:
        for name, value in list(values.items()):
            values[name] = self.seal(value)


def unseal_channel(channel: pb.Channel, sealer: Sealer) -> pb.Channel:
    """A copy of a stored channel (ChannelStore.get) with its secrets in the clear, for the one
    that sends through it. SealError names the field that cannot be opened (never its value)."""
    out = pb.Channel()
    out.CopyFrom(channel)
    secrets = channel_secrets(out)
    for path, value in sealer.open_each(secrets).items():
        secrets[path] = value
    return out
