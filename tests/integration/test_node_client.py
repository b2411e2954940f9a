"""The Node.js example (examples/node/client.js, @grpc/grpc-js + @grpc/proto-loader over protos/)
against a live suite: Redis, the api, and a scheduler and an executor as processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from schedcore import pb
from tests.integration.engine_support import ROOT, suite
from tests.support import RedisServer

CLIENT = ROOT / "examples" / "node" / "client.js"


def test_node_client_creates_lists_and_reads_executions(redis_srv: RedisServer, rds) -> None:
    node = shutil.which("node")
    assert node, "node is not installed (apt-get install nodejs npm)"
    assert (ROOT / "node_modules" / "@grpc" / "grpc-js").exists(), "run `make tools` (npm ci) first"
    with suite(redis_srv) as s:
        out = subprocess.run(
            [node, str(CLIENT)],
            cwd=ROOT,
            env={**os.environ, "API_ADDR": s.api.target, "WAIT_SECONDS": "60"},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        events = [line["event"] for line in lines]
        assert events == ["created", "listed", "execution"], out.stdout
        created, listed, execution = lines
        assert created["name"].startswith("node-example-") and created["state"] == "TASK_STATE_ACTIVE"
        assert listed["id"] == created["id"] and listed["name"] == created["name"]
        assert execution["task_id"] == created["id"]
        assert execution["status"] == "EXECUTION_STATUS_SUCCEEDED"
        # The log target records the payload the Node client sent.
        assert json.loads(execution["output"])["payload"] == {"client": "node"}
        # What the Node client saw is what the api holds.
        task = s.stub.GetTask(pb.GetTaskRequest(id=created["id"])).task
        assert task.name == created["name"] and dict(task.payload) == {"client": "node"}
        (stored,) = s.executions(created["id"])
        assert stored.id == execution["id"]
        assert stored.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
