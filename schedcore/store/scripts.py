"""The Lua scripts in lua/, registered once per client (EVALSHA, loaded on first use).

Each script is sent with lua/prelude.lua in front of it: the helpers several scripts share
(quotas) are written once.

The api's writes that a client gets acknowledged (tasks created, changed, deleted, paused,
resumed, run; tokens created and revoked; channels created, changed and deleted) are each one of
the scripts loaded with `write`: with REDIS_WAIT_REPLICAS they wait for replicas there, for every
caller (schedcore/store/replicas.py).
"""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from schedcore.redisconn import StoreClient
from schedcore.store.replicas import NO_WAIT, ReplicaWait, Script, replicated

_DIR = Path(__file__).parent / "lua"
PRELUDE = (_DIR / "prelude.lua").read_text()


class Scripts:
    def __init__(self, redis: Redis, wait: ReplicaWait = NO_WAIT) -> None:
        def load(name: str) -> AsyncScript:
            return redis.register_script(PRELUDE + (_DIR / f"{name}.lua").read_text())

        def write(name: str) -> Script:
            """An acknowledged api write: followed by WAIT when `wait` asks for replicas."""
            client: StoreClient = redis  # type: ignore[assignment]  # Store passes a StoreClient
            return replicated(load(name), client, wait)

        self.task_create = write("task_create")
        self.task_create_many = write("task_create_many")
        self.task_write = write("task_write")
        self.task_delete = write("task_delete")
        self.execution_create = write("execution_create")
        self.execution_cancel = write("execution_cancel")
        self.execution_trim = load("execution_trim")
        self.token_create = write("token_create")
        self.token_revoke = write("token_revoke")
        self.channel_create = write("channel_create")
        self.channel_update = write("channel_update")
        self.channel_delete = write("channel_delete")
        self.peek_due = load("peek_due")
        self.fire_read = load("fire_read")
        self.fire_commit = load("fire_commit")
        self.dispatch_lease = load("dispatch_lease")
        self.dispatch_complete = load("dispatch_complete")
        self.dispatch_renew = load("dispatch_renew")
        self.dispatch_reclaim = load("dispatch_reclaim")
        self.dispatch_park = load("dispatch_park")
        self.alert_sweep = load("alert_sweep")
        self.notify_lease = load("notify_lease")
        self.notify_done = load("notify_done")
        self.partition_claim = load("partition_claim")
        self.partition_release = load("partition_release")
        self.migrate_in = load("migrate_in")
        self.migrate_out = load("migrate_out")
        self.migrate_merge = load("migrate_merge")
        self.migrate_audit = load("migrate_audit")
