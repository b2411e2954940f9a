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
# Tasks in the store besides the example's own, and the example's page size: several pages.
OTHER_TASKS = 25
PAGE_SIZE = 10


def test_node_client_creates_pages_through_the_list_and_reads_executions(redis_srv: RedisServer, rds) -> None:
    node = shutil.which("node")
    assert node, "node is not installed (apt-get install nodejs npm)"
    assert (ROOT / "node_modules" / "@grpc" / "grpc-js").exists(), "run `make tools` (npm ci) first"
    with suite(redis_srv) as s:
        # More tasks than one page holds: the example must page through them to find its own.
        others = {
            s.stub.CreateTask(
                pb.CreateTaskRequest(
                    task=pb.Task(
                        name=f"other {i}",
                        schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 1 1 *")),
                        target=pb.Target(log=pb.LogTarget()),
                    )
                )
            ).task.id
            for i in range(OTHER_TASKS)
        }
        out = subprocess.run(
            [node, str(CLIENT)],
            cwd=ROOT,
            env={
                **os.environ,
                "API_ADDR": s.api.target,
                "WAIT_SECONDS": "60",
                "PAGE_SIZE": str(PAGE_SIZE),
            },
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        events = [line["event"] for line in lines]
        pages = [line for line in lines if line["event"] == "page"]
        assert len(pages) >= 3, out.stdout  # 26 tasks, 10 a page at most
        assert events == ["created", *["page"] * len(pages), "listed", "execution"], out.stdout
        created, listed, execution = lines[0], lines[-2], lines[-1]
        assert created["name"].startswith("node-example-") and created["state"] == "TASK_STATE_ACTIVE"
        assert listed["id"] == created["id"] and listed["name"] == created["name"]
        # Every task is listed, once: the pages, in order, hold all of them.
        assert [p["page"] for p in pages] == list(range(1, len(pages) + 1))
        assert all(len(p["ids"]) <= PAGE_SIZE for p in pages), out.stdout
        ids = [task_id for p in pages for task_id in p["ids"]]
        assert sorted(ids) == sorted(others | {created["id"]}), out.stdout
        assert listed["count"] == OTHER_TASKS + 1 and listed["pages"] == len(pages)
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
