"""Validation of client input (services/api/validation.py): field paths, defaults, limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import pb
from schedcore.errors import InvalidArgument
from schedcore.sealing import Sealer, new_key
from schedcore.timeutil import MAX_MS, ms_to_ts
from services.api import sealed
from services.api import validation as V

NOW = 1_780_000_000_000  # 2026-05-28
MAX_PAYLOAD = 4096


def make_task(**fields: object) -> pb.Task:
    task = pb.Task(
        name="nightly report",
        schedule=pb.Schedule(cron=pb.CronSchedule(expression="*/5 * * * *")),
        target=pb.Target(log=pb.LogTarget()),
    )
    for name, value in fields.items():
        if isinstance(value, (pb.Schedule, pb.Target, pb.RetryPolicy, Duration, Struct)):
            getattr(task, name).CopyFrom(value)
        elif isinstance(value, dict):
            getattr(task, name).update(value)
        else:
            setattr(task, name, value)
    return task


def http_task(url: str = "https://example.com/hook", **http: object) -> pb.Task:
    return make_task(target=pb.Target(http=pb.HttpTarget(url=url, **http)))  # type: ignore[arg-type]


def violations(task: pb.Task, now: int = NOW, require_future: bool = True) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as info:
        V.task(task, now, MAX_PAYLOAD, require_future=require_future)
    return [(v.field, v.description) for v in info.value.violations]


def fields_of(task: pb.Task, **kw: object) -> list[str]:
    return [f for f, _ in violations(task, **kw)]  # type: ignore[arg-type]


def valid(task: pb.Task, now: int = NOW, require_future: bool = True) -> V.ValidTask:
    return V.task(task, now, MAX_PAYLOAD, require_future=require_future)


# --- defaults and normalization -------------------------------------------------------------------


def test_minimal_task_gets_defaults() -> None:
    got = valid(make_task(name="  nightly report  "))
    spec = got.spec
    assert spec.name == "nightly report"  # trimmed
    assert spec.schedule.cron.time_zone == "UTC"
    assert spec.timeout == Duration(seconds=60)
    assert spec.retry_policy == pb.RetryPolicy(
        max_attempts=1,
        initial_backoff=Duration(seconds=1),
        max_backoff=Duration(seconds=60),
        backoff_multiplier=2.0,
    )
    assert got.window.cron is not None and got.window.cron.expression == "*/5 * * * *"


def test_cron_expression_is_normalized_and_window_built() -> None:
    sched = pb.Schedule(
        cron=pb.CronSchedule(
            expression="  @DAILY ",
            time_zone=" Europe/Berlin ",
            start_time=ms_to_ts(NOW + 1000),
            end_time=ms_to_ts(NOW + 10**9),
        )
    )
    got = valid(make_task(schedule=sched))
    assert got.spec.schedule.cron.expression == "@daily"
    assert got.spec.schedule.cron.time_zone == "Europe/Berlin"
    assert (got.window.start_ms, got.window.end_ms) == (NOW + 1000, NOW + 10**9)


def test_http_target_defaults_to_post_and_trims_url() -> None:
    spec = valid(http_task(" https://example.com/hook ")).spec
    assert spec.target.http.method == pb.HttpMethod.HTTP_METHOD_POST
    assert spec.target.http.url == "https://example.com/hook"
    spec = valid(http_task(method=pb.HttpMethod.HTTP_METHOD_GET)).spec
    assert spec.target.http.method == pb.HttpMethod.HTTP_METHOD_GET


def test_all_violations_are_reported_at_once() -> None:
    task = pb.Task(
        name="",
        labels={"Bad": "v"},
        timeout=Duration(seconds=-1),
        retry_policy=pb.RetryPolicy(max_attempts=1000),
    )
    got = fields_of(task)
    assert set(got) == {
        "task.name",
        "task.labels",
        "task.schedule",
        "task.target",
        "task.timeout",
        "task.retry_policy.max_attempts",
    }


# --- name, description, labels --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("", "required"), ("   ", "required"), ("x" * 201, "longer than 200"), ("a\nb", "control")],
)
def test_bad_names(name: str, fragment: str) -> None:
    got = violations(make_task(name=name))
    assert got[0][0] == "task.name" and fragment in got[0][1]


def test_name_and_description_limits() -> None:
    valid(make_task(name="x" * 200, description="d" * 2000))
    assert fields_of(make_task(description="d" * 2001)) == ["task.description"]


@pytest.mark.parametrize("key", ["a", "0", "a" * 63, "team/a.b-c_d", "9z"])
def test_good_label_keys(key: str) -> None:
    valid(make_task(labels={key: "v"}))


@pytest.mark.parametrize("key", ["", "A", "Team", "_a", "-a", ".a", "/a", "a" * 64, "a b", "é", "a:b"])
def test_bad_label_keys(key: str) -> None:
    got = violations(make_task(labels={key: "v"}))
    assert [f for f, _ in got] == ["task.labels"]
    assert "must be 1-63 characters" in got[0][1]


def test_label_values() -> None:
    valid(make_task(labels={"a": "", "b": "x" * 256}))
    assert fields_of(make_task(labels={"a": "x" * 257})) == ["task.labels[a]"]
    assert fields_of(make_task(labels={"a": "line\nbreak"})) == ["task.labels[a]"]


def test_label_count_limit() -> None:
    valid(make_task(labels={f"k{i}": "v" for i in range(64)}))
    assert fields_of(make_task(labels={f"k{i}": "v" for i in range(65)})) == ["task.labels"]


# --- http target ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://h",
        "https://example.com:8443/a?b=c#d",
        "http://[::1]:80/",
        "HTTP://EXAMPLE.COM",
        "http://h:65535",
    ],
)
def test_good_urls(url: str) -> None:
    valid(http_task(url))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com",
        "http://",
        "http:example.com",
        "//example.com/x",
        "example.com",
        "http://h:0",
        "http://h:65536",
        "http://h:port",
        "http://[::1",
        "file:///etc/passwd",
    ],
)
def test_bad_urls(url: str) -> None:
    got = violations(http_task(url))
    assert got == [("task.target.http.url", "must be an absolute http:// or https:// URL with a host")]


@pytest.mark.parametrize("url", ["http://h/a b", "http://h/\x00", "http://h/a\rb", "not a url"])
def test_urls_with_spaces_or_control_characters(url: str) -> None:
    got = violations(http_task(url))
    assert got == [
        ("task.target.http.url", "must be a URL without spaces or control characters (encode a space as %20)")
    ]


def test_a_url_too_long_says_its_length() -> None:
    got = violations(http_task("http://h/" + "a" * 2048))
    assert got == [("task.target.http.url", "must be at most 2048 characters (it has 2057)")]


def test_url_required() -> None:
    assert violations(http_task("  ")) == [("task.target.http.url", "required")]


def test_headers() -> None:
    valid(http_task(headers={"X-Token": "abc", "Content-Type": "application/json", "X-Tab": "a\tb"}))
    got = violations(http_task(headers={"Bad Header": "v"}))
    assert got == [("task.target.http.headers", "'Bad Header' is not a valid header name")]
    assert fields_of(http_task(headers={"": "v"})) == ["task.target.http.headers"]
    assert fields_of(http_task(headers={"X-Inject": "a\r\nEvil: 1"})) == [
        "task.target.http.headers[X-Inject]"
    ]
    assert fields_of(http_task(headers={"X-Nul": "a\x00"})) == ["task.target.http.headers[X-Nul]"]
    assert fields_of(http_task(headers={f"H{i}": "v" for i in range(65)})) == ["task.target.http.headers"]
    valid(http_task(headers={f"H{i}": "v" for i in range(64)}))


def test_http_method_body_and_expected_status() -> None:
    assert fields_of(http_task(method=42)) == ["task.target.http.method"]
    valid(http_task(body=b"x" * MAX_PAYLOAD))
    assert fields_of(http_task(body=b"x" * (MAX_PAYLOAD + 1))) == ["task.target.http.body"]
    for status in (0, 100, 204, 599):
        valid(http_task(expected_status=status))
    for status in (1, 99, 600, -200):
        assert fields_of(http_task(expected_status=status)) == ["task.target.http.expected_status"]


def test_target_required() -> None:
    task = make_task()
    task.ClearField("target")
    assert violations(task) == [("task.target", "required: set log, http or command")]


def test_payload_limit() -> None:
    small = Struct()
    small.update({"k": "v"})
    assert valid(make_task(payload=small)).spec.payload == small
    big = Struct()
    big.update({"k": "x" * MAX_PAYLOAD})
    got = violations(make_task(payload=big))
    assert got[0][0] == "task.payload" and f"limit of {MAX_PAYLOAD}" in got[0][1]


# --- timeout and retry policy ---------------------------------------------------------------------


def test_timeout_limits() -> None:
    assert valid(make_task(timeout=Duration(nanos=1_000_000))).spec.timeout == Duration(nanos=1_000_000)
    assert valid(make_task(timeout=Duration(seconds=86400))).spec.timeout == Duration(seconds=86400)
    for bad in (Duration(seconds=86401), Duration(seconds=0), Duration(nanos=999_999), Duration(seconds=-5)):
        assert fields_of(make_task(timeout=bad)) == ["task.timeout"]


def test_retry_policy_defaults_fill_unset_fields() -> None:
    got = valid(make_task(retry_policy=pb.RetryPolicy(max_attempts=5))).spec.retry_policy
    assert got == pb.RetryPolicy(
        max_attempts=5,
        initial_backoff=Duration(seconds=1),
        max_backoff=Duration(seconds=60),
        backoff_multiplier=2.0,
    )


def test_retry_max_backoff_defaults_to_at_least_initial_backoff() -> None:
    got = valid(
        make_task(retry_policy=pb.RetryPolicy(initial_backoff=Duration(seconds=120)))
    ).spec.retry_policy
    assert got.initial_backoff == Duration(seconds=120)
    assert got.max_backoff == Duration(seconds=120)


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (pb.RetryPolicy(max_attempts=101), "task.retry_policy.max_attempts"),
        (pb.RetryPolicy(max_attempts=-1), "task.retry_policy.max_attempts"),
        (pb.RetryPolicy(initial_backoff=Duration(nanos=500_000)), "task.retry_policy.initial_backoff"),
        (pb.RetryPolicy(initial_backoff=Duration(seconds=86401)), "task.retry_policy.initial_backoff"),
        (pb.RetryPolicy(max_backoff=Duration(seconds=0)), "task.retry_policy.max_backoff"),
        (
            pb.RetryPolicy(initial_backoff=Duration(seconds=10), max_backoff=Duration(seconds=5)),
            "task.retry_policy.max_backoff",
        ),
        (pb.RetryPolicy(backoff_multiplier=0.5), "task.retry_policy.backoff_multiplier"),
        (pb.RetryPolicy(backoff_multiplier=10.01), "task.retry_policy.backoff_multiplier"),
        (pb.RetryPolicy(backoff_multiplier=float("nan")), "task.retry_policy.backoff_multiplier"),
        (pb.RetryPolicy(backoff_multiplier=float("inf")), "task.retry_policy.backoff_multiplier"),
        (pb.RetryPolicy(backoff_multiplier=-2.0), "task.retry_policy.backoff_multiplier"),
    ],
)
def test_retry_policy_limits(policy: pb.RetryPolicy, field: str) -> None:
    assert fields_of(make_task(retry_policy=policy)) == [field]


def test_retry_policy_bounds_are_inclusive() -> None:
    policy = pb.RetryPolicy(
        max_attempts=100,
        initial_backoff=Duration(nanos=1_000_000),
        max_backoff=Duration(seconds=86400),
        backoff_multiplier=10.0,
    )
    assert valid(make_task(retry_policy=policy)).spec.retry_policy == policy
    assert (
        valid(
            make_task(retry_policy=pb.RetryPolicy(backoff_multiplier=1.0))
        ).spec.retry_policy.backoff_multiplier
        == 1.0
    )


# --- schedules ------------------------------------------------------------------------------------


def test_schedule_required() -> None:
    task = make_task()
    task.ClearField("schedule")
    assert fields_of(task) == ["task.schedule"]


def test_once_must_be_in_the_future_unless_unchanged() -> None:
    past = make_task(schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=ms_to_ts(NOW))))
    assert violations(past) == [
        (
            "task.schedule.once.run_time",
            f"is in the past ({_utc(NOW)}, now {_utc(NOW)}): a one-time task must run later",
        )
    ]
    assert valid(past, require_future=False).window.once_ms == NOW
    future = make_task(schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=ms_to_ts(NOW + 1))))
    assert valid(future).window.once_ms == NOW + 1
    missing = make_task(schedule=pb.Schedule(once=pb.OneTimeSchedule()))
    assert violations(missing) == [("task.schedule.once.run_time", "required")]


def test_once_run_time_range() -> None:
    far = make_task(schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=ms_to_ts(MAX_MS))))
    assert valid(far).window.once_ms == MAX_MS
    beyond = make_task(
        schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=Timestamp(seconds=MAX_MS // 1000 + 1)))
    )
    assert fields_of(beyond) == ["task.schedule.once.run_time"]
    before_epoch = make_task(schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=Timestamp(seconds=-1))))
    assert fields_of(before_epoch, require_future=False) == ["task.schedule.once.run_time"]
    bad_nanos = make_task(
        schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=Timestamp(seconds=NOW // 1000 + 10, nanos=-1)))
    )
    assert fields_of(bad_nanos) == ["task.schedule.once.run_time"]


def test_cron_errors_name_expression_or_time_zone() -> None:
    bad_expr = make_task(schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 30 2 *")))
    assert violations(bad_expr) == [("task.schedule.cron.expression", "'0 0 30 2 *' never matches a date")]
    bad_zone = make_task(
        schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 * * * *", time_zone="Mars/Base"))
    )
    assert violations(bad_zone) == [("task.schedule.cron.time_zone", "unknown IANA time zone 'Mars/Base'")]


def test_cron_start_and_end() -> None:
    def cron(start: int | None, end: int | None) -> pb.Task:
        c = pb.CronSchedule(expression="0 * * * *")
        if start is not None:
            c.start_time.CopyFrom(ms_to_ts(start))
        if end is not None:
            c.end_time.CopyFrom(ms_to_ts(end))
        return make_task(schedule=pb.Schedule(cron=c))

    assert violations(cron(NOW + 1000, NOW + 1000)) == [
        ("task.schedule.cron.end_time", "must be after start_time")
    ]
    [(field, message)] = violations(cron(None, NOW - 1))
    assert field == "task.schedule.cron.end_time"
    assert message.startswith("is in the past (") and message.endswith("the schedule would never run again")
    assert valid(cron(None, NOW - 1), require_future=False).window.end_ms == NOW - 1
    assert valid(cron(NOW - 10**9, None)).window.start_ms == NOW - 10**9  # a past start is fine


# --- ids, etags, request ids, paging, preview ----------------------------------------------------


def test_ids() -> None:
    assert V.task_id("0123456789abcdef") == "0123456789abcdef"
    for bad, fragment in [("", "required"), ("0123456789ABCDEF", "malformed"), ("0123", "malformed")]:
        with pytest.raises(InvalidArgument) as info:
            V.task_id(bad)
        assert info.value.violations[0].field == "id" and fragment in info.value.violations[0].description
    assert V.execution_id("0123456789abcdef-1780000000000-mabcd")
    with pytest.raises(InvalidArgument):
        V.execution_id("0123456789abcdef-178")
    with pytest.raises(InvalidArgument) as info:
        V.task_id("x", path="task.id")
    assert info.value.violations[0].field == "task.id"


def test_etag() -> None:
    assert V.etag("") is None
    assert V.etag("17") == 17
    for bad in ("-1", "abc", "1.0", "9" * 19, " 1"):
        with pytest.raises(InvalidArgument) as info:
            V.etag(bad)
        assert info.value.violations[0].field == "etag"


def test_request_id() -> None:
    assert V.request_id("") == ""
    assert V.request_id("~" * 128) == "~" * 128
    for bad in ("has space", "x" * 129, "tab\t", "é"):
        with pytest.raises(InvalidArgument) as info:
            V.request_id(bad)
        assert info.value.violations[0].field == "request_id"


def test_page_size_bounds() -> None:
    assert V.page_size(0) == V.DEFAULT_PAGE_SIZE == 50
    assert V.page_size(1) == 1
    assert V.page_size(1000) == 1000
    assert V.page_size(1001) == V.page_size(2**31 - 1) == 1000  # AIP-158: coerced to the maximum
    assert V.page_size(500, maximum=200) == 200
    for bad in (-1, -(2**31)):
        with pytest.raises(InvalidArgument) as info:
            V.page_size(bad)
        assert info.value.violations[0].field == "page_size"
        assert "must not be negative" in info.value.violations[0].description


def test_preview_count_bounds() -> None:
    assert V.preview_count(0) == 5
    assert V.preview_count(100) == 100
    for bad in (-1, 101):
        with pytest.raises(InvalidArgument) as info:
            V.preview_count(bad)
        assert info.value.violations[0].field == "count"


# --- update_paths ---------------------------------------------------------------------------------


def test_update_paths_empty_mask_takes_the_set_fields() -> None:
    task = pb.Task(name="n", labels={"a": "b"}, timeout=Duration(seconds=5))
    assert V.update_paths(task, []) == ["name", "labels", "timeout"]
    task = pb.Task(retry_policy=pb.RetryPolicy(), payload=Struct())
    assert V.update_paths(task, []) == ["payload", "retry_policy"]


def test_update_paths_empty_mask_and_empty_task() -> None:
    with pytest.raises(InvalidArgument) as info:
        V.update_paths(pb.Task(), [])
    assert info.value.violations[0].field == "update_mask"
    # Output-only fields do not count as something to change.
    with pytest.raises(InvalidArgument):
        V.update_paths(pb.Task(id="0123456789abcdef", etag="3", state=pb.TaskState.TASK_STATE_PAUSED), [])


def test_update_paths_star_is_every_mutable_field() -> None:
    assert V.update_paths(pb.Task(), ["*"]) == list(V.MUTABLE_FIELDS)


def test_update_paths_explicit_mask_is_deduplicated_in_order() -> None:
    assert V.update_paths(pb.Task(), ["schedule", "name", "schedule"]) == ["schedule", "name"]


def test_update_paths_rejects_unknown_and_output_only_fields() -> None:
    with pytest.raises(InvalidArgument) as info:
        V.update_paths(pb.Task(), ["name", "id", "schedule.cron", "state"])
    got = [(v.field, v.description.split(" ")[0]) for v in info.value.violations]
    assert got == [("update_mask", "'id'"), ("update_mask", "'schedule.cron'"), ("update_mask", "'state'")]


# --- secret headers and command targets ------------------------------------------------------------


def test_secret_headers_are_validated_like_headers_and_never_quoted() -> None:
    task = http_task(
        headers={"X-Plain": "a", "Authorization": "visible"},
        secret_headers={"authorization": "s3cr3t-one", "bad name": "s3cr3t-two", "X-Key": "s3cr3t\r\nX: y"},
    )
    found = violations(task)
    assert (
        "task.target.http.secret_headers[authorization]",
        "also named in headers: a header is either secret or not",
    ) in found
    assert ("task.target.http.secret_headers", "'bad name' is not a valid header name") in found
    assert (
        "task.target.http.secret_headers[X-Key]",
        "value must not contain control characters (CR, LF)",
    ) in found
    assert not any("s3cr3t" in f"{f} {d}" for f, d in found), found


def test_secret_headers_repeated_in_another_case_and_too_large_are_refused() -> None:
    found = violations(http_task(secret_headers={"X-Key": "a", "x-key": "b"}))
    assert len(found) == 1 and found[0][1] == "named twice (header names are case-insensitive)"
    big = {f"X-{i}": "v" * 1000 for i in range(17)}
    assert fields_of(http_task(secret_headers=big)) == ["task.target.http.secret_headers"]
    assert fields_of(http_task(secret_headers={f"X-{i}": "v" for i in range(65)})) == [
        "task.target.http.secret_headers"
    ]
    ok = valid(http_task(headers={"X-A": "1"}, secret_headers={"Authorization": "Bearer t"}))
    assert dict(ok.spec.target.http.secret_headers) == {"Authorization": "Bearer t"}


def command_task(**command: object) -> pb.Task:
    return make_task(target=pb.Target(command=pb.CommandTarget(**command)))  # type: ignore[arg-type]


def test_command_target_is_kept_as_given() -> None:
    spec = valid(
        command_task(
            program="/bin/echo", args=["$(touch x)", "; rm -rf /", "*"], env={"A_1": "v"}, working_dir="/tmp"
        )
    ).spec
    assert spec.target.command.program == "/bin/echo"
    assert list(spec.target.command.args) == ["$(touch x)", "; rm -rf /", "*"]
    assert dict(spec.target.command.env) == {"A_1": "v"}
    assert spec.target.command.working_dir == "/tmp"


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ({}, "task.target.command.program"),
        ({"program": "x" * 4097}, "task.target.command.program"),
        ({"program": "echo", "args": ["a"] * 257}, "task.target.command.args"),
        ({"program": "echo", "args": ["ok", "x" * (32 * 1024 + 1)]}, "task.target.command.args[1]"),
        ({"program": "echo", "env": {f"V{i}": "" for i in range(65)}}, "task.target.command.env"),
        ({"program": "echo", "env": {"1BAD": "v"}}, "task.target.command.env"),
        ({"program": "echo", "env": {"A-B": "v"}}, "task.target.command.env"),
        ({"program": "echo", "working_dir": "relative/dir"}, "task.target.command.working_dir"),
    ],
)
def test_command_target_limits(command: dict[str, object], field: str) -> None:
    assert fields_of(command_task(**command)) == [field]


def test_keep_stored_keeps_blank_values_drops_missing_and_replaces_new() -> None:
    sealer = Sealer([new_key()])
    stored = pb.Target(
        http=pb.HttpTarget(url="https://x", secret_headers={"A": "old-a", "B": "old-b", "C": "old-c"})
    )
    sealer.seal_target(stored)
    new = pb.Target(http=pb.HttpTarget(url="https://x", secret_headers={"A": "", "C": "new-c", "D": ""}))
    sealed.keep_stored(sealer, new, stored)
    assert dict(new.http.secret_headers) == {"A": "old-a", "C": "new-c", "D": ""}
    stored_env = pb.Target(command=pb.CommandTarget(program="p", secret_env={"K": "old-k", "L": "old-l"}))
    sealer.seal_target(stored_env)
    new_env = pb.Target(command=pb.CommandTarget(program="p", secret_env={"K": "", "M": "m"}))
    sealed.keep_stored(sealer, new_env, stored_env)
    assert dict(new_env.command.secret_env) == {"K": "old-k", "M": "m"}
    assert sealed.changes(sealer, new_env, stored_env)  # L dropped, M added
    same = pb.Target(command=pb.CommandTarget(program="p", secret_env={"K": "", "L": ""}))
    sealed.keep_stored(sealer, same, stored_env)
    assert not sealed.changes(sealer, same, stored_env)
    assert sealed.changes(Sealer([new_key()]), same, stored_env), "a value that cannot open counts as changed"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
