"""AuditService: the audit trail, newest first (docs/security.md). Needs the viewer role; a token
limited to a namespace reads only that namespace's events."""

from __future__ import annotations

import grpc

from schedcore import pb
from schedcore.store import Store
from schedcore.store.audit import decode
from services.api import access, validation
from services.api.auth import token_id
from services.api.pagetoken import PageTokens
from services.api.paging import page


class AuditService(pb.audit_service_grpc.AuditServiceServicer):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, store: Store, pages: PageTokens, max_page_bytes: int) -> None:
        self.store = store
        self.pages = pages
        self.max_page_bytes = max_page_bytes

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        task_id = validation.task_id(request.task_id, "task_id") if request.task_id else ""
        actor = token_id(request.actor_token_id, "actor_token_id") if request.actor_token_id else ""
        size = validation.page_size(request.page_size)
        namespace = access.list_namespace(validation.namespace(request.namespace))
        start, end = validation.time_range(request)

        async def fetch(after: str | None, count: int) -> list[tuple[str, pb.AuditEvent | None]]:
            if end == 0:
                return []
            rows = await self.store.audit.scan(after, start, end, count)
            return [(event_id, decode(event_id, fields)) for event_id, fields in rows]

        def matches(event: pb.AuditEvent) -> bool:
            return (
                (not task_id or event.task_id == task_id)
                and (not actor or event.actor_token_id == actor)
                and (not namespace or event.namespace == namespace)
            )

        # The cursor is the last event id returned: it names the stream entry and its partition
        # (schedcore/store/audit.py, event_id); an id of partition 0 is the bare entry id.
        token, filters = request.page_token, ["audit", task_id, actor, namespace, start, end]
        events, next_token = await page(
            self.pages,
            token,
            filters,
            fetch,
            size,
            matches,
            _same,
            self.max_page_bytes,
            self.store.audit.parse,
        )
        return pb.ListAuditEventsResponse(events=events, next_page_token=next_token)


def _same(event: pb.AuditEvent) -> pb.AuditEvent:
    return event
