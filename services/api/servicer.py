"""TaskService: the public API (the task RPCs here, the execution RPCs in
services/api/executions.py). Validates, reads and writes the store; raises domain errors,
which the shared interceptor maps to gRPC statuses.

Roles are checked before a call gets here (services/api/access.py); namespaces here, where it is
known what a request touches. Every successful change carries its audit event into the same Lua
script as the change (schedcore/store/audit.py); a refused or no-op change records nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable

import grpc

from schedcore import pb
from schedcore.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from schedcore.netpolicy import AddressPolicy
from schedcore.schedule import Window
from schedcore.sealing import Sealer
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.keys import DEFAULT_NAMESPACE
from schedcore.store.tasks import NewTask, PriorTask, RequestConflict, StoredTask, member_task_id
from schedcore.timeutil import ms_to_ts
from services.api import access, alertcheck, sealed, stats, validation
from services.api.executions import ExecutionService
from services.api.ids import new_task_id, with_fresh_id
from services.api.pagetoken import PageTokens
from services.api.paging import page
from services.api.preview import preview

ACTION = pb.AuditAction
ACTIVE = pb.TaskState.TASK_STATE_ACTIVE
PAUSED = pb.TaskState.TASK_STATE_PAUSED
COMPLETED = pb.TaskState.TASK_STATE_COMPLETED
# Attempts of a read-modify-write that lost a race with another writer (no client etag).
CAS_ATTEMPTS = 5
# Most tasks one BatchCreateTasks call may create.
MAX_BATCH = 1000


class TaskService(ExecutionService):
    """The task RPCs; the execution RPCs and shared helpers come from ExecutionService."""

    def __init__(self, store: Store, settings: Settings, tokens: PageTokens) -> None:
        super().__init__(store, settings, tokens)
        self.addresses = AddressPolicy.from_settings(settings)
        self.sealer = Sealer(settings.secret_keys)

    # --- tasks -----------------------------------------------------------------------------

    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTaskResponse:
        now = await self.store.now_ms()
        new = self._prepare(request, now)
        await self._require_runnable([new.spec])
        await alertcheck.channels_exist(self.store.channels, [new.spec], ["task.alerts"])
        if request.validate_only:
            return pb.CreateTaskResponse(task=_created(new, validated_only=True))

        # A request id decides the partition: a retry finds its request key in the same script.
        parts = self.store.partitions
        partition = parts.of_request(new.request_key, new.spec.namespace) if new.request_key else None

        async def attempt() -> PriorTask | None:
            new.spec.id = new_task_id(parts, partition)
            return await self.store.tasks.create(
                new.spec.id,
                new.spec,
                new.state,
                new.next_ms,
                new.request_key,
                new.fingerprint,
                self.settings.request_id_ttl_s,
                self._audit(
                    ACTION.AUDIT_ACTION_CREATE_TASK, namespace=new.spec.namespace, task_id=new.spec.id
                ),
                self.settings.quota(new.spec.namespace),
            )

        prior = await with_fresh_id("a task id", attempt)
        if prior is None:
            return pb.CreateTaskResponse(task=_created(new))
        if prior.fingerprint != new.fingerprint:
            raise AlreadyExists(
                f"request_id {new.request_key!r} was already used to create task {prior.task_id} with "
                f"different contents"
            )
        return pb.CreateTaskResponse(task=await self._prior(prior.task_id, new.request_key))

    async def BatchCreateTasks(
        self, request: pb.BatchCreateTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchCreateTasksResponse:
        count = len(request.requests)
        if not 1 <= count <= MAX_BATCH:
            raise InvalidArgument.field("requests", f"must hold 1 to {MAX_BATCH} requests, got {count}")
        news = self._prepare_batch(request, await self.store.now_ms())
        await self._require_runnable([new.spec for new in news])
        paths = [f"requests[{i}].task.alerts" for i in range(count)]  # every request is in news
        await alertcheck.channels_exist(self.store.channels, [new.spec for new in news], paths)

        # The whole batch goes to one partition, so it stays one all-or-none script; its first
        # request id decides which (a retried batch finds its request keys there).
        parts = self.store.partitions
        first = next((new for new in news if new.request_key), None)
        partition = parts.of_request(first.request_key, first.spec.namespace) if first else None

        async def attempt() -> list[PriorTask | None]:
            batch = secrets.randbelow(parts.count) if partition is None else partition
            for new in news:
                new.spec.id = new_task_id(parts, batch)
            return await self.store.tasks.create_many(
                news,
                self.settings.request_id_ttl_s,
                self._audit(ACTION.AUDIT_ACTION_CREATE_TASK),
                self.settings.quota,
            )

        try:
            priors = await with_fresh_id("task ids", attempt)
        except RequestConflict as exc:
            raise AlreadyExists(
                f"requests[{exc.index}].request_id {news[exc.index].request_key!r} was already used "
                f"to create task {exc.prior.task_id} with different contents; nothing was created"
            ) from None
        # Requests repeated from an earlier call: their tasks, read in one round trip.
        prior_ids = [p.task_id for p in priors if p is not None]
        stored = dict(zip(prior_ids, await self.store.tasks.get_many(prior_ids), strict=True))
        tasks = []
        for new, prior in zip(news, priors, strict=True):
            if prior is None:
                tasks.append(_created(new))
                continue
            found = stored[prior.task_id]
            if found is None:
                raise AlreadyExists(
                    f"request_id {new.request_key!r} created task {prior.task_id}, which has "
                    f"since been deleted"
                )
            tasks.append(found.to_proto())
        return pb.BatchCreateTasksResponse(tasks=tasks)

    def _prepare_batch(self, request: pb.BatchCreateTasksRequest, now: int) -> list[NewTask]:
        """Validate every request of a batch; its violations name `requests[<index>].<field>`."""
        news: list[NewTask] = []
        problems: list[FieldViolation] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(request.requests):
            try:
                news.append(self._prepare(item, now, f"requests[{i}].task.target"))
            except InvalidArgument as exc:
                problems += [
                    FieldViolation(f"requests[{i}].{v.field}", v.description) for v in exc.violations
                ]
                continue
            if item.validate_only:
                problems.append(FieldViolation(f"requests[{i}].validate_only", "not supported in a batch"))
            if item.request_id and seen.setdefault(item.request_id, i) != i:
                problems.append(
                    FieldViolation(f"requests[{i}].request_id", f"repeats requests[{seen[item.request_id]}]")
                )
        if problems:
            raise InvalidArgument(problems)
        return news

    def _prepare(self, request: pb.CreateTaskRequest, now: int, target_path: str = "task.target") -> NewTask:
        """Validate one create request: the task to store, not yet with an id."""
        request_id = validation.request_id(request.request_id)
        sealed.unsealed_values(request.task.target)
        valid = validation.task(request.task, now, self.settings.max_payload_bytes, addresses=self.addresses)
        spec = valid.spec
        spec.namespace = spec.namespace or access.current().namespace or DEFAULT_NAMESPACE
        access.check_namespace(spec.namespace, "task.namespace")
        if spec.target.HasField("command"):
            access.check_command_targets(target_path)
        fingerprint = hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()[:16]
        next_ms = valid.window.next_after_ms(now)
        if next_ms is None:
            raise InvalidArgument.field("task.schedule", "has no occurrence after now")
        spec.create_time.CopyFrom(ms_to_ts(now))
        spec.update_time.CopyFrom(ms_to_ts(now))
        self.sealer.seal_target(spec.target)  # after the fingerprint: sealing is random
        return NewTask(spec, ACTIVE, next_ms, request_id, fingerprint)

    async def _require_runnable(self, specs: list[pb.Task]) -> None:
        """A command target only while some executor runs command targets (a scheduler linked
        to one vouches for it in Redis): otherwise FAILED_PRECONDITION, nothing written."""
        if any(spec.target.HasField("command") for spec in specs) and not (
            await self.store.engine.capability_available("command")
        ):
            raise FailedPrecondition(
                "task.target.command: no executor runs command targets; start executors with "
                "EXECUTOR_COMMAND_TARGETS=true (docs/security.md, docs/deploy.md)"
            )

    async def _prior(self, task_id: str, request_id: str) -> pb.Task:
        """The task an earlier call with the same request id created."""
        try:
            return (await self._get(task_id)).to_proto()
        except NotFound:
            raise AlreadyExists(
                f"request_id {request_id!r} created task {task_id}, which has since been deleted"
            ) from None

    async def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTaskResponse:
        stored = await self._get(validation.task_id(request.id))
        return pb.GetTaskResponse(task=stored.to_proto())

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTasksResponse:
        size = validation.page_size(request.page_size)
        if request.state not in pb.TaskState.values():
            raise InvalidArgument.field("state", f"unknown state {request.state}")
        if request.order_by not in pb.TaskOrder.values():
            raise InvalidArgument.field("order_by", f"unknown order {request.order_by}")
        by_next = request.order_by == pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME
        labels = dict(request.labels)
        needle = request.name_contains.casefold()
        namespace = access.list_namespace(validation.namespace(request.namespace))
        filters: list[object] = [request.state, sorted(labels.items()), needle, by_next, namespace]

        def matches(task: StoredTask) -> bool:
            if namespace and task.namespace != namespace:
                return False
            if request.state and task.state != request.state:
                return False
            if any(task.spec.labels.get(k) != v for k, v in labels.items()):
                return False
            return not needle or needle in task.spec.name.casefold()

        async def fetch(after: str | None, count: int) -> list[tuple[str, StoredTask | None]]:
            members = await self.store.tasks.scan(by_next, after, count)
            found = await self.store.tasks.get_many([member_task_id(m, by_next) for m in members])
            return list(zip(members, found, strict=True))

        tasks, next_token = await page(
            self.tokens,
            request.page_token,
            filters,
            fetch,
            size,
            matches,
            StoredTask.to_proto,
            self.settings.list_page_max_bytes,
        )
        total = await stats.list_total(self.store, request, namespace)
        return pb.ListTasksResponse(tasks=tasks, next_page_token=next_token, total_size=total)

    async def UpdateTask(
        self, request: pb.UpdateTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateTaskResponse:
        task_id = validation.task_id(request.task.id, "task.id")
        want_rev = validation.etag(request.task.etag, "task.etag")
        paths = validation.update_paths(request.task, list(request.update_mask.paths))

        async def change(stored: StoredTask) -> StoredTask:
            if request.task.namespace and request.task.namespace != stored.namespace:
                raise InvalidArgument.field(
                    "task.namespace", "cannot be changed: a task's namespace is fixed at creation"
                )
            merged = validation.merged(stored.spec, request.task, paths)
            if "target" in paths:  # validated in the clear, sealed again below
                sealed.unsealed_values(request.task.target)
                sealed.keep_stored(self.sealer, merged.target, stored.spec.target)
            now = await self.store.now_ms()
            reschedule = "schedule" in paths
            # An unchanged schedule is not re-checked for lying in the future: a completed
            # one-time task can still be renamed.
            valid = validation.task(
                merged,
                now,
                self.settings.max_payload_bytes,
                require_future=reschedule,
                addresses=self.addresses,
            )
            spec = valid.spec
            # Every update: a channel deleted since is refused until the task stops naming it.
            await alertcheck.channels_exist(self.store.channels, [spec], ["task.alerts"])
            if "target" in paths:
                if spec.target.HasField("command") and sealed.changes(
                    self.sealer, spec.target, stored.spec.target
                ):
                    access.check_command_targets("task.target")
                await self._require_runnable([spec])
                self.sealer.seal_target(spec.target)
            spec.id = task_id
            spec.namespace = stored.namespace
            spec.create_time.CopyFrom(stored.spec.create_time)
            spec.update_time.CopyFrom(ms_to_ts(now))
            state, next_ms = stored.state, stored.next_ms
            if reschedule and stored.state != PAUSED:
                next_ms = valid.window.next_after_ms(now)
                if next_ms is None:
                    raise InvalidArgument.field("task.schedule", "has no occurrence after now")
                state = ACTIVE
            audit = self._audit(
                ACTION.AUDIT_ACTION_UPDATE_TASK,
                namespace=stored.namespace,
                task_id=task_id,
                update_mask=paths,
            )
            if request.validate_only:
                return StoredTask(spec, stored.rev, state, next_ms, stored.last)
            quota = self.settings.quota(stored.namespace)
            if reschedule:
                rev = await self.store.tasks.write(
                    task_id, stored.rev, spec=spec, state=state, next_ms=next_ms, audit=audit, quota=quota
                )
            else:
                rev = await self.store.tasks.write(task_id, stored.rev, spec=spec, audit=audit, quota=quota)
            return StoredTask(spec, rev, state, next_ms, stored.last)

        updated = await self._mutate(task_id, want_rev, change)
        return pb.UpdateTaskResponse(task=updated.to_proto())

    async def DeleteTask(
        self, request: pb.DeleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTaskResponse:
        task_id = validation.task_id(request.id)
        want_rev = validation.etag(request.etag)
        stored = await self._get(task_id)  # its namespace (fixed at creation) says who may
        audit = self._audit(ACTION.AUDIT_ACTION_DELETE_TASK, namespace=stored.namespace, task_id=task_id)
        await self.store.tasks.delete(task_id, want_rev, audit)
        return pb.DeleteTaskResponse()

    async def PauseTask(
        self, request: pb.PauseTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseTaskResponse:
        task_id = validation.task_id(request.id)

        async def pause(stored: StoredTask) -> StoredTask:
            if stored.state == COMPLETED:
                raise FailedPrecondition(f"task {task_id} is completed; it cannot be paused")
            if stored.state == PAUSED:
                return stored
            audit = self._audit(ACTION.AUDIT_ACTION_PAUSE_TASK, namespace=stored.namespace, task_id=task_id)
            rev = await self.store.tasks.write(task_id, stored.rev, state=PAUSED, next_ms=None, audit=audit)
            return StoredTask(stored.spec, rev, PAUSED, None, stored.last)

        task = await self._mutate(task_id, validation.etag(request.etag), pause)
        return pb.PauseTaskResponse(task=task.to_proto())

    async def ResumeTask(
        self, request: pb.ResumeTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeTaskResponse:
        task_id = validation.task_id(request.id)

        async def resume(stored: StoredTask) -> StoredTask:
            if stored.state == COMPLETED:
                raise FailedPrecondition(f"task {task_id} is completed; it cannot be resumed")
            if stored.state == ACTIVE:
                return stored
            now = await self.store.now_ms()
            window = Window.of(stored.spec.schedule)  # it was valid when stored
            if window.once_ms is not None:
                next_ms: int | None = window.once_ms  # its time may have passed: it runs at once
            else:
                next_ms = window.next_after_ms(now)
            state = ACTIVE if next_ms is not None else COMPLETED
            audit = self._audit(ACTION.AUDIT_ACTION_RESUME_TASK, namespace=stored.namespace, task_id=task_id)
            rev = await self.store.tasks.write(task_id, stored.rev, state=state, next_ms=next_ms, audit=audit)
            return StoredTask(stored.spec, rev, state, next_ms, stored.last)

        task = await self._mutate(task_id, validation.etag(request.etag), resume)
        return pb.ResumeTaskResponse(task=task.to_proto())

    async def _mutate(
        self, task_id: str, want_rev: int | None, change: Callable[[StoredTask], Awaitable[StoredTask]]
    ) -> StoredTask:
        """Read, check the client's etag, change with compare-and-set; retry lost races when the
        client sent no etag (with one, a lost race is the client's conflict: ABORTED)."""
        for _ in range(CAS_ATTEMPTS):
            stored = await self._get(task_id)
            if want_rev is not None and stored.rev != want_rev:
                raise Aborted(
                    f"etag {want_rev} is stale: task {task_id} has changed (etag {stored.etag}); "
                    f"read it again"
                )
            try:
                return await change(stored)
            except Aborted:
                if want_rev is not None:
                    raise
        raise Aborted(f"task {task_id} is changing too often; retry")

    # --- schedules -------------------------------------------------------------------------

    async def PreviewSchedule(
        self, request: pb.PreviewScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewScheduleResponse:
        return preview(request, int(time.time() * 1000))


def _created(new: NewTask, validated_only: bool = False) -> pb.Task:
    task = StoredTask(new.spec, 1, new.state, new.next_ms, None).to_proto()
    if validated_only:
        task.ClearField("etag")  # it names no stored version
    return task
