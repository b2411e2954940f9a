"""REDIS_WAIT_REPLICAS: the api's acknowledged writes wait for replicas (docs/partitions.md,
"Acknowledged writes").

Every write the api acknowledges to a client is one Lua script (the api writes of Scripts).
With REDIS_WAIT_REPLICAS = n > 0 each is followed by `SET <its partition's wait mark> 1` and
`WAIT n <timeout>`, on the same connection to the same node. WAIT counts the replicas that have
the writes of its own connection, so on any other connection it proves nothing; and a script may
write nothing yet acknowledge what another connection wrote (a retried create finds its request
id), so the mark gives every such call a write of its own, after all the primary had applied
(the replication stream is in order).

Neither redis-py's `wait()` nor a separate command will do: redis-py 8.1's asyncio RedisCluster
sends WAIT to its default node (RedisCluster.COMMAND_FLAGS maps WAIT to DEFAULT_NODE, and its
result callback sums the replies of the nodes it went to), not to the primary that took the
write, and a pooled command may take any free connection. So the three go as one pipeline: on
one node, the client's pipeline (one pooled connection); on a cluster, to the primary of the
script's first key with ClusterNode.execute_pipeline (one connection, and no retry of its own that
could send WAIT elsewhere), following MOVED and ASK (ASKING before each write) and loading the
script on NOSCRIPT here.

Fewer replicas than n within the timeout: NotReplicated (UNAVAILABLE), though the write stands on
the primary. Connection failures are StoreUnavailable as everywhere; on a cluster the client then
learns the layout again before its next command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis import exceptions
from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.commands.core import AsyncScript

from schedcore.errors import NotReplicated
from schedcore.redisconn import (
    CLOSED_UNDER_US,
    CLUSTER_UNAVAILABLE,
    UNAVAILABLE,
    StoreClient,
    StoreRedisCluster,
    closed_under_us,
    unavailable,
)
from schedcore.store.keys import wait_mark

# Redirections (MOVED, ASK), NOSCRIPT and TRYAGAIN followed before the call gives up: a slot
# being migrated answers TRYAGAIN to a script whose keys are split between the two nodes.
ATTEMPTS = 6
TRY_AGAIN_PAUSE_S = 0.05


class Script(Protocol):
    """A registered script as the stores call it (AsyncScript, or WaitingScript)."""

    async def __call__(self, keys: Sequence[Any] | None = None, args: Iterable[Any] | None = None) -> Any: ...


@dataclass(frozen=True)
class ReplicaWait:
    """WAIT `replicas` `timeout_ms` after each acknowledged api write; 0 replicas: off."""

    replicas: int = 0
    timeout_ms: int = 0

    @classmethod
    def of(cls, replicas: int, redis_timeout_s: float) -> ReplicaWait:
        """Half the command timeout: WAIT's reply must come before the socket gives up on it."""
        return cls(replicas, max(1, int(redis_timeout_s * 500)))


NO_WAIT = ReplicaWait()


def replicated(script: AsyncScript, client: StoreClient, wait: ReplicaWait) -> Script:
    """`script`, followed by WAIT on every call when `wait` asks for replicas."""
    return WaitingScript(script, client, wait) if wait.replicas > 0 else script


class WaitingScript:
    def __init__(self, script: AsyncScript, client: StoreClient, wait: ReplicaWait) -> None:
        self.script = script
        self.client = client
        self.wait = ("WAIT", wait.replicas, wait.timeout_ms)
        self.wanted = wait.replicas
        self.timeout_ms = wait.timeout_ms

    async def __call__(self, keys: Sequence[Any] | None = None, args: Iterable[Any] | None = None) -> Any:
        keys = list(keys or ())
        command = ("EVALSHA", self.script.sha, len(keys), *keys, *(args or ()))
        mark = ("SET", wait_mark(keys[0]), 1)
        node: ClusterNode | None = None
        asking = False
        for _ in range(ATTEMPTS):
            if isinstance(self.client, StoreRedisCluster):
                if node is None:
                    await self.client.initialize()
                    node = self.client.get_node_from_key(keys[0])
                assert node is not None  # the primary: get_node_from_key(replica=False)
                reply, marked, acknowledged = await self._on_node(node, (command, mark), asking)
            else:
                reply, marked, acknowledged = await self._on_one((command, mark))
            asking = False
            if isinstance(reply, exceptions.NoScriptError):
                self.script.sha = await self.client.script_load(self.script.script)
                command = ("EVALSHA", self.script.sha, *command[2:])
            elif isinstance(reply, exceptions.AskError):  # the slot is moving: the key is there
                assert isinstance(self.client, StoreRedisCluster)  # only a cluster redirects
                node = self.client.get_node(host=reply.host, port=reply.port)
                if node is None:  # a node the layout does not list yet
                    raise unavailable(reply)
                asking = True
            elif isinstance(reply, exceptions.MovedError):  # the slot moved: learn its owner
                assert isinstance(self.client, StoreRedisCluster)
                await self.client.nodes_manager.move_slot(reply)
                node = None
            elif isinstance(reply, exceptions.TryAgainError):
                await asyncio.sleep(TRY_AGAIN_PAUSE_S)
                node = None
            else:
                return self._checked(reply, marked, acknowledged)
        raise unavailable(reply)

    def _checked(self, reply: Any, marked: Any, acknowledged: Any) -> Any:
        if isinstance(reply, Exception):
            if isinstance(reply, CLUSTER_UNAVAILABLE):
                raise unavailable(reply)
            raise reply  # the script's own error: a bug, INTERNAL
        for failed in (marked, acknowledged):  # the mark's key moved away meanwhile, a failover
            if isinstance(failed, Exception):
                raise unavailable(failed)
        if int(acknowledged) < self.wanted:
            raise NotReplicated(int(acknowledged), self.wanted, self.timeout_ms)
        return reply

    async def _on_one(self, writes: tuple[tuple[Any, ...], ...]) -> list[Any]:
        """One Redis (or Sentinel's master): a pipeline holds one pooled connection throughout
        (a retry after a lost connection sends them all again on it)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for command in (*writes, self.wait):
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _on_node(
        self, node: ClusterNode, writes: tuple[tuple[Any, ...], ...], asking: bool
    ) -> list[Any]:
        """The primary of a cluster: one connection; after ASK, ASKING before each write (it
        admits only the next command)."""
        assert isinstance(self.client, StoreRedisCluster)
        sent: list[tuple[Any, ...]] = []
        for command in writes:
            sent += [("ASKING",), command] if asking else [command]
        commands = [PipelineCommand(i, *c) for i, c in enumerate([*sent, self.wait])]
        try:
            await node.execute_pipeline(commands)
        except CLUSTER_UNAVAILABLE as exc:
            await self._relearn()
            raise unavailable(exc) from exc
        except CLOSED_UNDER_US as exc:
            if not closed_under_us(exc):
                raise
            raise unavailable(exc) from exc
        replies = [c.result for c in commands if c.args[0] != "ASKING"]
        if any(isinstance(r, CLUSTER_UNAVAILABLE) for r in replies):
            await self._relearn()  # the node failed over, or no longer serves the slot
        return replies

    async def _relearn(self) -> None:
        """As redis-py does after a lost node: close the connections, so the next command asks
        the cluster for its layout again."""
        assert isinstance(self.client, StoreRedisCluster)
        with contextlib.suppress(*UNAVAILABLE, OSError):  # a connection already broken
            await self.client.aclose()
