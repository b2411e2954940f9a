"""Every Redis key name the suite uses, in one place (docs/redis-layout.md describes them).

All keys of one partition share the hash tag `{p}` so every Lua script and transaction touches a
single hash slot (Redis Cluster ready). A deployment has PARTITIONS of them (Partitions below); a
task and its executions live in the partition its id names, global keys (tokens, capabilities,
the page-token secret) in partition 0 (docs/partitions.md, "Where each key lives").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

# Server-assigned task ids: 16 lowercase hex characters.
TASK_ID_WIDTH = 16
TASK_ID = re.compile(r"^[0-9a-f]{16}$")
# "<task id>-<nominal ms, 13 digits>" for an occurrence, plus "-m<4 hex>" for a manual run.
EXECUTION_ID = re.compile(r"^([0-9a-f]{16})-([0-9]{13})(-m[0-9a-f]{4})?$")
# Namespaces of tasks and tokens (a DNS label), and the one of a task stored without one.
NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_NAMESPACE = "default"
# Server-assigned token ids: 16 lowercase hex characters.
TOKEN_ID = TASK_ID
# Server-assigned notification channel ids: 16 lowercase hex characters.
CHANNEL_ID = TASK_ID

# Most partitions a deployment may have: every listing reads each one (docs/partitions.md).
MAX_PARTITIONS = 256
_ID_SPACE = 1 << 64

# Width of the zero-padded millisecond timestamps in lexicographic index members.
MS_WIDTH = 13
# Sorts after every padded timestamp: the index position of a task with no next run.
NO_NEXT_RUN = "~"


def pad_ms(ms: int) -> str:
    return f"{ms:0{MS_WIDTH}d}"


def execution_id(task_id: str, nominal_ms: int, manual_suffix: str = "") -> str:
    return f"{task_id}-{pad_ms(nominal_ms)}" + (f"-m{manual_suffix}" if manual_suffix else "")


def task_of_execution(execution_id: str) -> str:
    """The id of the task an execution belongs to (its first 16 characters, see EXECUTION_ID)."""
    return execution_id[:TASK_ID_WIDTH]


def next_member(task_id: str, next_ms: int | None) -> str:
    """Member of the next-run index: ordered by next run time, then id; no next run sorts last."""
    return f"{pad_ms(next_ms) if next_ms is not None else NO_NEXT_RUN}:{task_id}"


def name_member(name: str, task_id: str) -> str:
    """Member of the name index: ordered by name (bytewise), then id."""
    return f"{name}\x00{task_id}"


def channel_member(namespace: str, name: str, channel_id: str = "") -> str:
    """Member of the channel index: ordered by namespace, then name (bytewise), then id; without
    an id, the prefix every channel of that name in that namespace has (names and namespaces
    hold no NUL). The channel scripts build the same (lua/prelude.lua, channel_member)."""
    return f"{namespace}\x00{name}\x00{channel_id}"


def history_member(execution_id: str) -> str:
    """Member of the global history index: ordered by nominal time, then id.

    Derivable from the execution id alone, so retention can trim without reading records.
    """
    match = EXECUTION_ID.match(execution_id)
    assert match, execution_id
    return f"{match.group(2)}:{execution_id}"


def wait_mark(key: str) -> str:
    """String "1", rewritten before each WAIT of REDIS_WAIT_REPLICAS in the partition of `key`
    (its hash tag): WAIT counts only the writes of its own connection, and a call may change
    nothing and still acknowledge a write another connection made (a retried create finding its
    request id), so each waited call writes this first (schedcore/store/replicas.py)."""
    return key[: key.index("}") + 1] + ":waitmark"


@dataclass(frozen=True)
class Keys:
    prefix: str = "ts"
    partition: str = "0"

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{{{self.partition}}}"

    @property
    def base(self) -> str:
        """What every key of this partition starts with ("ts:{p}:")."""
        return self._base + ":"

    # The prefixes of per-id keys, given to the scripts that build those keys from ids (the same
    # hash tag, so the same slot: docs/redis-layout.md, "Keys a script builds").
    @property
    def task_prefix(self) -> str:
        return f"{self._base}:task:"

    @property
    def execution_prefix(self) -> str:
        return f"{self._base}:exec:"

    @property
    def task_history_prefix(self) -> str:
        return f"{self._base}:hist:"

    @property
    def task_active_prefix(self) -> str:
        return f"{self._base}:act:"

    def task(self, task_id: str) -> str:
        """Hash: spec (Task protobuf, user-owned fields), rev, state, next, nm, nx, last, the
        firing lease (lease: expiry ms, ltok: token), and ns, sz: the namespace whose quotas count
        the task and the bytes of its spec they count (absent for a task stored before quotas
        existed: it is not counted), and buf: "<max concurrent>:<ready ms>:<execution id>" of
        the run waiting under the BUFFER_ONE or CANCEL_OTHER overlap policy (docs/engine.md,
        "Overlap")."""
        return self.task_prefix + task_id

    @property
    def by_name(self) -> str:
        """Sorted set, all scores 0, members name_member(): ListTasks by name."""
        return f"{self._base}:idx:name"

    @property
    def by_next(self) -> str:
        """Sorted set, all scores 0, members next_member(): ListTasks by next run, and the due
        index the scheduler takes occurrences from (every member <= now is due)."""
        return f"{self._base}:idx:next"

    @property
    def request_prefix(self) -> str:
        """The prefix of request-id keys: request_id() adds the request id's digest."""
        return f"{self._base}:reqid:"

    def request_id(self, request_id: str, namespace: str = DEFAULT_NAMESPACE) -> str:
        """String "<task id>:<request fingerprint>", expiring: idempotent CreateTask.

        The client's id is hashed: any string makes a short key of fixed shape. Request ids are
        scoped to the task's namespace (a repeat is recognised only within it); the default
        namespace hashes the id alone, as before namespaces existed."""
        scoped = request_id if namespace in ("", DEFAULT_NAMESPACE) else f"{namespace}\n{request_id}"
        digest = hashlib.sha256(scoped.encode()).hexdigest()[:32]
        return self.request_prefix + digest

    def execution(self, execution_id: str) -> str:
        """Hash: pb (Execution protobuf), status (authoritative over pb's), tok (lease token)."""
        return self.execution_prefix + execution_id

    def task_history(self, task_id: str) -> str:
        """Sorted set, scores 0, members execution ids (which sort by nominal time)."""
        return self.task_history_prefix + task_id

    def task_active(self, task_id: str) -> str:
        """Set: ids of the task's executions that are PENDING or RUNNING (a superset: scripts
        reading it check each record's status and drop the ended), except the one waiting in
        the task's overlap buffer (the task hash's `buf`). docs/engine.md, "Overlap"."""
        return self.task_active_prefix + task_id

    @property
    def history(self) -> str:
        """Sorted set, scores 0, members history_member(): every execution by nominal time."""
        return f"{self._base}:hist"

    @property
    def ready(self) -> str:
        """Sorted set: execution ids waiting for dispatch, scored by the ms they may start."""
        return f"{self._base}:ready"

    @property
    def ready_command(self) -> str:
        """Sorted set: like `ready`, for executions of command tasks set aside by a scheduler
        that had no executor able to run them (docs/engine.md, "Routing")."""
        return f"{self._base}:ready:command"

    @property
    def capabilities(self) -> str:
        """Hash: target kind an executor runs besides log and http ("command") -> ms (Redis
        clock) until which a scheduler linked to such an executor vouches for it."""
        return f"{self._base}:capabilities"

    @property
    def inflight(self) -> str:
        """Sorted set: execution ids handed to an executor, scored by their lease expiry (ms)."""
        return f"{self._base}:inflight"

    @property
    def task_counts(self) -> str:
        """Hash: TaskState number -> how many tasks are in that state (the scripts that change
        a task's state keep it in step)."""
        return f"{self._base}:stats:tasks"

    @property
    def quota_tasks(self) -> str:
        """Hash: namespace -> how many of its tasks count against its task quota (the scripts
        that create and delete tasks keep it in step and refuse a create past the limit)."""
        return f"{self._base}:quota:tasks"

    @property
    def quota_bytes(self) -> str:
        """Hash: namespace -> bytes of its tasks' stored specs that count against its task bytes
        quota (the task scripts keep it in step with each task's `sz`)."""
        return f"{self._base}:quota:bytes"

    def quota_runs(self, minute: int) -> str:
        """Hash for one minute (ms // 60000, Redis clock): namespace -> RunTask and
        RerunExecution calls it made in that minute, against its runs-per-minute quota. Expires
        two minutes after it is made."""
        return f"{self._base}:quota:runs:{minute}"

    def minute_stats(self, minute: int) -> str:
        """Hash for one minute (ms // 60000): `s<status>` executions that ended with that status,
        `l<i>` ended executions whose lag fell in lag bucket i (schedcore/store/stats.py).
        Expires a day after its minute."""
        return f"{self._base}:stats:m:{minute}"

    def token(self, token_id: str) -> str:
        """Hash of an API token: name, role, ns, hash (SHA-256 hex of the secret), ctime, exp,
        rtime (ms; exp and rtime absent when unset), by (name of the token that created it)."""
        return f"{self._base}:tok:{token_id}"

    def token_hash(self, digest: str) -> str:
        """String: the id of the token whose secret has this SHA-256 (hex). Authentication looks
        a bearer token up here; the secret itself is never stored."""
        return f"{self._base}:tokh:{digest}"

    @property
    def tokens(self) -> str:
        """Sorted set, scores 0, members "<13-digit create ms>:<token id>": ListTokens."""
        return f"{self._base}:idx:tok"

    @property
    def audit(self) -> str:
        """Stream of audit events, trimmed to about AUDIT_MAX_EVENTS; entry ids carry the
        store's time (schedcore/store/audit.py lists the fields)."""
        return f"{self._base}:audit"

    @property
    def owner(self) -> str:
        """String, expiring: the instance id of the scheduler that works this partition, for
        PARTITION_LEASE_SECONDS unless renewed (schedcore/store/ownership.py)."""
        return f"{self._base}:owner"

    @property
    def schedulers(self) -> str:
        """Sorted set (partition 0's): scheduler instance id -> ms (Redis clock) until which its
        last heartbeat keeps it a member; owners are chosen among the members."""
        return f"{self._base}:schedulers"

    @property
    def partition_count(self) -> str:
        """String: the PARTITIONS the data is laid out in, written by the first service to start
        (partition 0's; services refuse to start with another count)."""
        return f"{self._base}:partitions"

    def migrated(self, run: str, what: str, source: int) -> str:
        """String, expiring in two days: partition migration `run` added the dropped partition
        `source`'s `what` (a counter hash or the audit stream) into this partition's
        (schedcore/store/migrate.py), so a rerun does not add it twice."""
        return f"{self._base}:migrated:{run}:{what}:{source}"

    @property
    def audit_merging(self) -> str:
        """Stream: this partition's audit stream merged with a dropped partition's, built by a
        partition migration before it takes the stream's place."""
        return f"{self._base}:audit:merging"

    # --- alerts (docs/alerts.md) ---------------------------------------------------------------

    @property
    def notification_prefix(self) -> str:
        return f"{self._base}:notif:"

    def notification(self, notification_id: str) -> str:
        """Hash of one alert to one channel: k kind, t task id, e execution id, c channel id, ns,
        m message, at raised (ms), st state (p, d, f), a attempts, err, end (ms), tok lease
        token; expires NOTIFICATION_RETENTION_DAYS after it ended."""
        return self.notification_prefix + notification_id

    @property
    def notifications_due(self) -> str:
        """Sorted set: PENDING notification ids, scored by when the next attempt may start (a
        leased one: when its lease expires)."""
        return f"{self._base}:notifs:due"

    @property
    def task_notifications_prefix(self) -> str:
        return f"{self._base}:notifs:task:"

    def task_notifications(self, task_id: str) -> str:
        """Sorted set: the task's notification ids scored by when they were raised (the newest
        NOTIFICATIONS_PER_TASK)."""
        return self.task_notifications_prefix + task_id

    @property
    def alert_watch(self) -> str:
        """Sorted set: `l:<execution id>:<channel ids>` (late-start check) and `r:...`
        (running-long check) of tasks with those rules, scored by when the sweep looks."""
        return f"{self._base}:alerts:watch"

    def channel(self, channel_id: str) -> str:
        """Hash of a notification channel (partition 0's): pb (Channel protobuf, secrets sealed),
        rev, ns, name."""
        return f"{self._base}:chan:{channel_id}"

    @property
    def channels(self) -> str:
        """Sorted set (partition 0's), scores 0, members channel_member()
        ("<namespace>\x00<name>\x00<id>"): ListChannels by name, and unique names per namespace."""
        return f"{self._base}:idx:chan"

    @property
    def page_token_secret(self) -> str:
        """String: the secret that signs page tokens when PAGE_TOKEN_SECRET is not set."""
        return f"{self._base}:secret:page-token"


@dataclass(frozen=True)
class Partitions:
    """The `count` partitions of a deployment and where each id lives (docs/partitions.md).

    A task's partition is its id (64 bits, hex) modulo `count`; an execution lives with its task;
    with one partition every id maps to "0", the layout from before partitions existed."""

    prefix: str = "ts"
    count: int = 1
    all: tuple[Keys, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1 to {MAX_PARTITIONS}, got {self.count}")
        object.__setattr__(self, "all", tuple(Keys(self.prefix, str(p)) for p in range(self.count)))

    @property
    def home(self) -> Keys:
        """Partition 0: the global keys (tokens, capabilities, page-token secret)."""
        return self.all[0]

    def of_task(self, task_id: str) -> int:
        return int(task_id, 16) % self.count

    def of_execution(self, execution_id: str) -> int:
        return self.of_task(task_of_execution(execution_id))

    def task(self, task_id: str) -> Keys:
        """The keys of the partition holding the task `task_id`."""
        return self.all[self.of_task(task_id)]

    def execution(self, execution_id: str) -> Keys:
        """The keys of the partition holding the execution `execution_id`."""
        return self.all[self.of_execution(execution_id)]

    def of_request(self, request_id: str, namespace: str = DEFAULT_NAMESPACE) -> int:
        """The partition a create with this request id goes to: where its request key is, so a
        retry finds it in the same script (the digest is the request key's own)."""
        return int(Keys().request_id(request_id, namespace).rsplit(":", 1)[1], 16) % self.count

    def id_in(self, partition: int, random64: int) -> str:
        """A task id in `partition` from 64 random bits: the nearest value below (or at) them that
        is `partition` modulo `count` (same bits, less log2(count) of them random)."""
        value = random64 - random64 % self.count + partition
        if value >= _ID_SPACE:
            value -= self.count
        return f"{value:0{TASK_ID_WIDTH}x}"
