"""The log target: records the payload and the execution's metadata as the attempt's output."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from schedcore.ipb import WorkItem
from services.executor.targets.base import SUCCEEDED, AttemptContext, Outcome, Target, bound_text


class LogTarget(Target):
    inline = True  # a bounded payload formatted as JSON: nothing to wait for

    def run_now(self, item: WorkItem, ctx: AttemptContext) -> Outcome:
        record: dict[str, Any] = {
            "execution_id": item.execution_id,
            "task_id": item.task_id,
            "task_name": item.task_name,
            "attempt": item.attempt,
            "nominal_time": item.nominal_time.ToJsonString() if item.HasField("nominal_time") else None,
            "executor_id": ctx.executor_id,
            "start_time": ctx.start_time.isoformat().replace("+00:00", "Z"),
            # Last, so a record cut to the bound keeps the metadata whole.
            "payload": json_format.MessageToDict(item.payload),
        }
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        output, truncated = bound_text(text, ctx.output_limit)
        return Outcome(SUCCEEDED, output=output, output_truncated=truncated)
