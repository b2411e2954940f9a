"""AlertService: notification channels and the notifications of a task (docs/alerts.md).

Channels are global (partition 0, schedcore/store/channels.py) and belong to a namespace: a token
limited to one sees and changes only its channels. Viewers read channels and notifications,
editors and admins change channels (services/api/access.py checks the role). A channel's secrets
(a webhook's signing secrets, a Slack webhook's URL) are write-only: sealed at rest as targets'
secrets are, empty in every response, kept on UpdateChannel when sent empty
(services/api/sealed.py). Every successful change carries its audit event into the script that
makes it.

The scheduler raises and delivers notifications; ListNotifications only reads them.
"""

from __future__ import annotations

import secrets

import grpc

from schedcore import pb
from schedcore.alerting import Alert, Sender
from schedcore.errors import Aborted, InvalidArgument, Violations
from schedcore.netpolicy import AddressPolicy
from schedcore.sealing import Sealer, SealError, redact_channel, unseal_channel
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.audit import AuditEntry
from schedcore.store.channels import member_channel_id
from schedcore.store.keys import CHANNEL_ID, DEFAULT_NAMESPACE
from schedcore.store.notifications import CURSOR
from schedcore.timeutil import ms_to_ts
from services.api import access, alertcheck, sealed, validation
from services.api.ids import new_id, with_fresh_id
from services.api.pagetoken import PageTokens
from services.api.paging import page

ACTION = pb.AuditAction
# Attempts of an UpdateChannel that lost a race with another writer (no client etag).
CAS_ATTEMPTS = 5
MAX_NOTIFICATION_PAGE = 200


def shown(channel: pb.Channel) -> pb.Channel:
    """A stored channel as a response carries it: a copy, secrets emptied."""
    out = pb.Channel()
    out.CopyFrom(channel)
    return redact_channel(out)


class AlertService(pb.alert_service_grpc.AlertServiceServicer):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, store: Store, settings: Settings, pages: PageTokens) -> None:
        self.store = store
        self.settings = settings
        self.pages = pages
        self.addresses = AddressPolicy.from_settings(settings)
        self.sealer = Sealer(settings.secret_keys)

    def _audit(self, action: int, channel: pb.Channel) -> AuditEntry:
        return AuditEntry.of(
            self.settings.audit_max_events,
            action,
            access.current().actor(),
            namespace=channel.namespace,
            channel_id=channel.id,
        )

    async def _get(self, value: str, path: str = "id") -> pb.Channel:
        """A channel the caller may see (as stored): NotFound, PermissionDenied for another
        namespace's."""
        channel = await self.store.channels.get(validation.hex_id(value, path, "channel"))
        access.check_namespace(channel.namespace, f"channel {channel.id}")
        return channel

    def _valid(self, channel_in: pb.Channel) -> pb.Channel:
        """The channel's user-owned fields, checked and normalized; secrets in the clear."""
        v = Violations()
        name = validation.display_name(v, "channel.name", channel_in.name, alertcheck.MAX_CHANNEL_NAME)
        out = pb.Channel(name=name)
        try:
            out.namespace = validation.namespace(channel_in.namespace, "channel.namespace")
        except InvalidArgument as exc:
            v.items += exc.violations
        alertcheck.channel_kind(v, channel_in, out, self.addresses)
        v.raise_if_any()
        return out

    async def CreateChannel(
        self, request: pb.CreateChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateChannelResponse:
        sealed.unsealed_channel(request.channel)
        channel = self._valid(request.channel)
        channel.namespace = channel.namespace or access.current().namespace or DEFAULT_NAMESPACE
        access.check_namespace(channel.namespace, "channel.namespace")
        now = ms_to_ts(await self.store.now_ms())
        channel.create_time.CopyFrom(now)
        channel.update_time.CopyFrom(now)
        self.sealer.seal_channel(channel)

        async def attempt() -> None:
            channel.id = new_id()
            await self.store.channels.create(
                channel, self._audit(ACTION.AUDIT_ACTION_CREATE_CHANNEL, channel)
            )

        await with_fresh_id("a channel id", attempt)
        channel.etag = "1"  # the first revision
        return pb.CreateChannelResponse(channel=shown(channel))

    async def GetChannel(
        self, request: pb.GetChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetChannelResponse:
        return pb.GetChannelResponse(channel=shown(await self._get(request.id)))

    async def ListChannels(
        self, request: pb.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChannelsResponse:
        size = validation.page_size(request.page_size)
        namespace = access.list_namespace(validation.namespace(request.namespace))

        async def fetch(after: str | None, count: int) -> list[tuple[str, pb.Channel | None]]:
            members = await self.store.channels.scan(namespace, after, count)
            found = await self.store.channels.get_many([member_channel_id(m) for m in members])
            return list(zip(members, found, strict=True))

        def valid(cursor: str) -> bool:
            parts = cursor.split("\x00")
            in_namespace = not namespace or parts[0] == namespace
            return len(parts) == 3 and in_namespace and bool(CHANNEL_ID.match(parts[2]))

        channels, next_token = await page(
            self.pages,
            request.page_token,
            ["channels", namespace],
            fetch,
            size,
            lambda channel: not namespace or channel.namespace == namespace,
            shown,
            self.settings.list_page_max_bytes,
            valid,
        )
        return pb.ListChannelsResponse(channels=channels, next_page_token=next_token)

    async def UpdateChannel(
        self, request: pb.UpdateChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateChannelResponse:
        """Read, check the client's etag, replace with compare-and-set; retry lost races when the
        client sent no etag (with one, a lost race is the client's conflict: ABORTED)."""
        want_rev = validation.etag(request.channel.etag, "channel.etag")
        sealed.unsealed_channel(request.channel)
        for _ in range(CAS_ATTEMPTS):
            stored = await self._get(request.channel.id, "channel.id")
            if want_rev is not None and int(stored.etag) != want_rev:
                raise Aborted(
                    f"etag {want_rev} is stale: channel {stored.id} has changed (etag {stored.etag}); "
                    "read it again"
                )
            if request.channel.namespace and request.channel.namespace != stored.namespace:
                raise InvalidArgument.field(
                    "channel.namespace", "cannot be changed: a channel's namespace is fixed at creation"
                )
            new = pb.Channel()
            new.CopyFrom(request.channel)
            sealed.keep_stored_channel(self.sealer, new, stored)
            channel = self._valid(new)
            channel.id, channel.namespace = stored.id, stored.namespace
            channel.create_time.CopyFrom(stored.create_time)
            channel.update_time.CopyFrom(ms_to_ts(await self.store.now_ms()))
            self.sealer.seal_channel(channel)
            audit = self._audit(ACTION.AUDIT_ACTION_UPDATE_CHANNEL, channel)
            try:
                channel.etag = str(await self.store.channels.update(channel, int(stored.etag), audit))
            except Aborted:
                if want_rev is not None:
                    raise
                continue
            return pb.UpdateChannelResponse(channel=shown(channel))
        raise Aborted(f"channel {request.channel.id} is changing too often; retry")

    async def DeleteChannel(
        self, request: pb.DeleteChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteChannelResponse:
        want_rev = validation.etag(request.etag)
        stored = await self._get(request.id)  # its namespace says who may
        audit = self._audit(ACTION.AUDIT_ACTION_DELETE_CHANNEL, stored)
        await self.store.channels.delete(stored.id, want_rev, audit)
        return pb.DeleteChannelResponse()

    async def TestChannel(
        self, request: pb.TestChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.TestChannelResponse:
        channel = await self._get(request.id)
        try:
            opened = unseal_channel(channel, self.sealer)
        except SealError as exc:
            return pb.TestChannelResponse(delivered=False, error=str(exc))
        who = access.current().actor().name or "the api"
        alert = Alert(
            f"test.{secrets.token_hex(8)}.{channel.id}",
            pb.AlertKind.ALERT_KIND_TEST,
            "",
            "",
            channel.namespace,
            "",
            f"a test notification through channel {channel.name}, sent by {who}",
            await self.store.now_ms(),
        )
        sender = Sender(self.settings)
        try:
            sent = await sender.send(opened, alert)
        finally:
            await sender.aclose()
        return pb.TestChannelResponse(delivered=sent.ok, error=sent.error)

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNotificationsResponse:
        task_id = validation.task_id(request.task_id, "task_id")
        size = validation.page_size(request.page_size, maximum=MAX_NOTIFICATION_PAGE)
        task = await self.store.tasks.get(task_id)  # NotFound
        access.check_namespace(task.namespace, f"task {task_id}")
        store = self.store.notifications

        async def fetch(after: str | None, count: int) -> list[tuple[str, pb.Notification | None]]:
            rows = await store.scan(task_id, after, count)
            found = await store.get_many(task_id, [notification_id for _, notification_id in rows])
            return [(key, item) for (key, _), item in zip(rows, found, strict=True)]

        notifications, next_token = await page(
            self.pages,
            request.page_token,
            ["notifications", task_id],
            fetch,
            size,
            lambda _: True,
            lambda notification: notification,
            self.settings.list_page_max_bytes,
            CURSOR.match,
        )
        return pb.ListNotificationsResponse(notifications=notifications, next_page_token=next_token)
