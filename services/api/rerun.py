"""RerunExecution (docs/scheduling.md, "Rerun"): one execution's occurrence run again, as a new
execution beside it. The original is read, never written.

The new record is a manual run of the original's occurrence: trigger RERUN, `rerun_of` naming
the original, the original's nominal time and payload, and an id of the manual-run form
"<task id>-<original's nominal ms>-m<4 hex>" (schedcore/store/keys.py, EXECUTION_ID), so every
parser of execution ids takes it and it sorts beside the original in the history indexes. It is
written like RunTask's run: the same create script, runs-per-minute quota, audit event and
retention. Its target, timeout and retries are the task's as they are now (an executor reads
them from the task when it runs), as for any run.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from schedcore import pb
from schedcore.errors import IdTaken, NotFound
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.alerts import rule_arg
from schedcore.store.audit import AuditEntry
from schedcore.store.executions import new_record
from schedcore.store.keys import task_of_execution
from schedcore.timeutil import ms_to_ts, ts_to_ms
from services.api import access, validation
from services.api.ids import with_fresh_id

RERUN = pb.ExecutionTrigger.EXECUTION_TRIGGER_RERUN
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
# As RunTask: 16 random bits, and several reruns of one occurrence may meet.
TRIES = 5

Audit = Callable[..., AuditEntry]


def record(original: pb.Execution, spec: pb.Task, now_ms: int, suffix: str) -> pb.Execution:
    """The PENDING record that runs `original`'s occurrence again, fired now.

    `planned_time` is now: lag (start minus planned) measures how long the rerun waited, as for
    RunTask, not how old the occurrence is (a rerun of last week's failure is not late)."""
    task_id, nominal_ms = task_of_execution(original.id), ts_to_ms(original.nominal_time)
    made = new_record(spec, task_id, nominal_ms, now_ms, PENDING, RERUN, suffix)
    made.rerun_of = original.id
    made.ClearField("payload")
    if original.HasField("payload"):
        made.payload.CopyFrom(original.payload)
    made.planned_time.CopyFrom(ms_to_ts(now_ms))
    return made


async def rerun(store: Store, settings: Settings, raw_id: str, audit: Audit) -> pb.Execution:
    """Create and queue the rerun of execution `raw_id`; the record created.

    INVALID_ARGUMENT (field "id") for a malformed id; NOT_FOUND without such an execution or once
    its task is deleted; PERMISSION_DENIED for a token limited to another namespace (as
    GetExecution); RESOURCE_EXHAUSTED past the namespace's runs per minute (as RunTask)."""
    original = await store.executions.get(validation.execution_id(raw_id))
    access.check_namespace(original.namespace, f"execution {original.id}")
    task_id = task_of_execution(original.id)
    try:
        stored = await store.tasks.get(task_id)
    except NotFound:
        raise NotFound(
            f"task {task_id!r} of execution {original.id!r} not found (deleted): nothing to rerun"
        ) from None
    now = await store.now_ms()
    quota = settings.quota(stored.namespace)

    async def attempt() -> pb.Execution:
        made = record(original, stored.spec, now, secrets.token_hex(2))
        event = audit(
            pb.AuditAction.AUDIT_ACTION_RERUN_EXECUTION,
            namespace=stored.namespace,
            task_id=task_id,
            execution_id=made.id,
        )
        alert = rule_arg(stored.spec.alerts, stored.namespace)
        if not await store.executions.create(made, now, event, quota, alert=alert):
            raise IdTaken(made.id)
        return made

    made = await with_fresh_id("an execution id", attempt, tries=TRIES)
    await store.executions.trim_task(task_id, settings.history_max_per_task)
    return made
