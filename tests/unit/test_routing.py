"""Routing as a pure function (services/scheduler/routing.py): streams are names, items are
(name, is command) pairs."""

from __future__ import annotations

from services.scheduler.routing import route


def cmd(name: str) -> tuple[str, bool]:
    return (name, True)


def log(name: str) -> tuple[str, bool]:
    return (name, False)


def is_command(item: tuple[str, bool]) -> bool:
    return item[1]


def test_command_work_goes_only_to_streams_that_run_it_and_the_rest_is_parked() -> None:
    items = [cmd("c1"), cmd("c2"), cmd("c3")]
    routes = route(items, {"plain": 10, "runs": 2}, ["runs"], is_command)
    assert routes.batches == {"plain": [], "runs": [cmd("c1"), cmd("c2")]}
    assert routes.park == [cmd("c3")] and routes.back == []


def test_command_work_takes_a_capable_streams_credits_before_other_work() -> None:
    items = [log("l1"), cmd("c1"), log("l2"), log("l3")]
    routes = route(items, {"runs": 2, "plain": 1}, ["runs"], is_command)
    assert routes.batches["runs"] == [cmd("c1"), log("l1")]
    assert routes.batches["plain"] == [log("l2")]
    assert routes.back == [log("l3")] and routes.park == []


def test_other_work_fills_the_stream_with_most_room_first() -> None:
    items = [log(f"l{i}") for i in range(5)]
    routes = route(items, {"a": 1, "b": 3, "c": 0}, [], is_command)
    assert routes.batches == {"a": [log("l3")], "b": [log("l0"), log("l1"), log("l2")], "c": []}
    assert routes.back == [log("l4")]


def test_without_streams_everything_is_left_over() -> None:
    routes = route([cmd("c"), log("l")], {}, [], is_command)
    assert routes.batches == {} and routes.park == [cmd("c")] and routes.back == [log("l")]
