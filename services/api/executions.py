"""The executions half of TaskService: the shared state and helpers of the service, running a
task now (RunTask), filling a past range (BackfillTask), running an execution's occurrence again
(RerunExecution, services/api/rerun.py), reading executions (ListExecutions, GetExecution) and
GetStats.

TaskService (services/api/servicer.py) adds the task RPCs on top; both halves are the one gRPC
service that services/api/app.py registers. An execution's namespace is its task's, copied into
the record when the execution is created (by RunTask here, by the scheduler's plan for
scheduled ones): reads need no second lookup.
"""

from __future__ import annotations

import contextlib
import secrets
import time

import grpc

from schedcore import pb, tracing
from schedcore.errors import IdTaken, InvalidArgument, NotFound
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.alerts import rule_arg
from schedcore.store.audit import AuditEntry
from schedcore.store.executions import Bounds, decode
from schedcore.store.keys import execution_id
from schedcore.store.tasks import StoredTask
from schedcore.timeutil import ms_to_ts
from services.api import access, backfill, rerun, validation
from services.api.ids import with_fresh_id
from services.api.pagetoken import PageTokens
from services.api.paging import page
from services.api.stats import get_stats

ACTION = pb.AuditAction
# Longest reason a CancelExecution may give (it goes into the record's status message).
MAX_CANCEL_REASON = 500


class ExecutionService(pb.task_service_grpc.TaskServiceServicer):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, store: Store, settings: Settings, tokens: PageTokens) -> None:
        self.store = store
        self.settings = settings
        self.tokens = tokens

    def _audit(self, action: int, **what: object) -> AuditEntry:
        """The audit event of a change the caller makes."""
        return AuditEntry.of(
            self.settings.audit_max_events,
            action,
            access.current().actor(),
            **what,  # type: ignore[arg-type]
        )

    async def _get(self, task_id: str) -> StoredTask:
        """A task the caller may see: NotFound, or PermissionDenied for another namespace."""
        stored = await self.store.tasks.get(task_id)
        access.check_namespace(stored.namespace, f"task {task_id}")
        return stored

    async def RunTask(
        self, request: pb.RunTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunTaskResponse:
        started_ns = time.time_ns()
        task_id = validation.task_id(request.id)
        stored = await self._get(task_id)
        now = await self.store.now_ms()
        execution = pb.Execution(
            task_id=task_id,
            namespace=stored.namespace,
            attempt=1,
            status=pb.ExecutionStatus.EXECUTION_STATUS_PENDING,
            trigger=pb.ExecutionTrigger.EXECUTION_TRIGGER_MANUAL,
        )
        execution.nominal_time.CopyFrom(ms_to_ts(now))
        execution.fire_time.CopyFrom(ms_to_ts(now))
        if stored.spec.HasField("payload"):
            execution.payload.CopyFrom(stored.spec.payload)

        async def attempt() -> None:
            execution.id = execution_id(task_id, now, secrets.token_hex(2))
            if tracing.ENABLED:
                tracing.stamp(execution)
            audit = self._audit(
                ACTION.AUDIT_ACTION_RUN_TASK,
                namespace=stored.namespace,
                task_id=task_id,
                execution_id=execution.id,
            )
            quota = self.settings.quota(stored.namespace)
            alert = rule_arg(stored.spec.alerts, stored.namespace)
            if not await self.store.executions.create(execution, now, audit, quota, alert=alert):
                raise IdTaken(execution.id)

        # Five tries: 16 random bits within one millisecond may collide.
        await with_fresh_id("an execution id", attempt, tries=5)
        tracing.created([execution], started_ns)
        await self.store.executions.trim_task(task_id, self.settings.history_max_per_task)
        return pb.RunTaskResponse(execution=execution)

    async def BackfillTask(
        self, request: pb.BackfillTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.BackfillTaskResponse:
        task_id = validation.task_id(request.id)
        stored = await self._get(task_id)
        now = await self.store.now_ms()
        times = backfill.occurrences(request, stored.spec, now)
        made = backfill.records(task_id, stored.spec, times, now)
        if request.dry_run:
            existing = await self.store.executions.count_existing([r.id for r in made])
            return pb.BackfillTaskResponse(occurrences=len(times), existing=existing)
        fates = await self.store.executions.create_missing(
            made,
            now,
            backfill.overlap(request, stored.spec),
            alert=rule_arg(stored.spec.alerts, stored.namespace),
        )
        created = fates.total()
        if created:
            audit = self._audit(
                ACTION.AUDIT_ACTION_BACKFILL_TASK, namespace=stored.namespace, task_id=task_id
            )
            await self.store.audit.append(self.store.partitions.of_task(task_id), audit)
            await self.store.executions.trim_task(task_id, self.settings.history_max_per_task)
        return pb.BackfillTaskResponse(
            occurrences=len(times), existing=len(times) - created, created=created, skipped=fates["skip"]
        )

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExecutionsResponse:
        task_id = validation.task_id(request.task_id, "task_id") if request.task_id else None
        namespace = access.list_namespace(validation.namespace(request.namespace))
        size = validation.page_size(request.page_size)
        if request.status not in pb.ExecutionStatus.values():
            raise InvalidArgument.field("status", f"unknown status {request.status}")
        start, end = validation.time_range(request)
        if task_id is not None and access.current().namespace:
            # A task of another namespace is refused outright; a deleted task's executions are
            # filtered by their own namespace below.
            with contextlib.suppress(NotFound):
                await self._get(task_id)
        bounds = Bounds(start, end)
        filters: list[object] = [task_id, request.status, start, end, namespace]

        async def fetch(after: str | None, count: int) -> list[tuple[str, tuple[int, bytes] | None]]:
            ids = await self.store.executions.scan(task_id, bounds, after, count)
            return list(zip(ids, await self.store.executions.get_many(ids), strict=True))

        def matches(row: pb.Execution) -> bool:
            return not namespace or row.namespace == namespace

        async def fetch_records(after: str | None, count: int) -> list[tuple[str, pb.Execution | None]]:
            # The status filter reads the hash's status field: only the rows it keeps are decoded.
            return [
                (
                    key,
                    decode(*row)
                    if row is not None and (not request.status or row[0] == request.status)
                    else None,
                )
                for key, row in await fetch(after, count)
            ]

        executions, next_token = await page(
            self.tokens,
            request.page_token,
            filters,
            fetch_records,
            size,
            matches,
            _same,
            self.settings.list_page_max_bytes,
            lambda cursor: validation.execution_id(cursor, "page_token"),
        )
        return pb.ListExecutionsResponse(executions=executions, next_page_token=next_token)

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetExecutionResponse:
        execution = await self.store.executions.get(validation.execution_id(request.id))
        access.check_namespace(execution.namespace, f"execution {execution.id}")
        return pb.GetExecutionResponse(execution=execution)

    async def RerunExecution(
        self, request: pb.RerunExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RerunExecutionResponse:
        started_ns = time.time_ns()
        execution = await rerun.rerun(self.store, self.settings, request.id, self._audit)
        tracing.created([execution], started_ns)
        return pb.RerunExecutionResponse(execution=execution)

    async def CancelExecution(
        self, request: pb.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelExecutionResponse:
        eid = validation.execution_id(request.id)
        if len(request.reason) > MAX_CANCEL_REASON:
            raise InvalidArgument.field("reason", f"at most {MAX_CANCEL_REASON} characters")
        execution = await self.store.executions.get(eid)
        access.check_namespace(execution.namespace, f"execution {eid}")
        actor = access.current().actor()
        reason = "CancelExecution" + (f" by {actor.name}" if actor.name else "")
        reason += f": {request.reason}" if request.reason else ""
        audit = self._audit(
            ACTION.AUDIT_ACTION_CANCEL_EXECUTION,
            namespace=execution.namespace,
            task_id=execution.task_id,
            execution_id=eid,
        )
        await self.store.executions.cancel(eid, reason, await self.store.now_ms(), audit)
        return pb.CancelExecutionResponse(execution=await self.store.executions.get(eid))

    async def GetStats(
        self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatsResponse:
        return await get_stats(self.store, request, self.settings)


def _same(execution: pb.Execution) -> pb.Execution:
    return execution
