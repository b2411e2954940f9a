"""The store's client turns every Redis failure a retry may cure into StoreUnavailable (commands,
pipelines, scripts), which the one error map sends as UNAVAILABLE; no layer above the store
catches redis-py's exceptions."""

import asyncio

import grpc
import pytest
import redis.exceptions

from schedcore import redisconn
from schedcore.errors import StoreUnavailable, status_for
from schedcore.store import Store
from tests.support import free_port


def _client() -> redisconn.StoreRedis:
    return redisconn.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)


async def _fails(call: str) -> StoreUnavailable:
    client = _client()
    try:
        if call == "command":
            await client.get("k")
        elif call == "pipeline":
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("k")
                pipe.set("k", "v")
                await pipe.execute()
        else:
            await client.register_script("return 1")()
    except StoreUnavailable as exc:
        return exc
    finally:
        await client.aclose()
    raise AssertionError(f"{call} on a closed port did not fail")


@pytest.mark.parametrize("call", ["command", "pipeline", "script"])
def test_a_refused_connection_is_store_unavailable(call: str) -> None:
    exc = asyncio.run(_fails(call))
    assert isinstance(exc.__cause__, redis.exceptions.ConnectionError)
    assert exc.reason.startswith("ConnectionError: ")  # for logs: which failure it was
    code, message = status_for(exc)
    assert code is grpc.StatusCode.UNAVAILABLE
    assert message == "the task store is unavailable; retry later"  # the cause stays in the logs


def test_redis_errors_that_no_retry_cures_pass_through() -> None:
    async def main() -> BaseException:
        client = _client()

        async def script_error(*args: object, **options: object) -> object:
            raise redis.exceptions.ResponseError("OOM command not allowed")

        client.connection_pool.get_connection = script_error  # type: ignore[assignment,method-assign]
        try:
            await client.get("k")
        except Exception as exc:  # noqa: BLE001 - the test looks at which
            return exc
        finally:
            await client.aclose()
        raise AssertionError("no error")

    exc = asyncio.run(main())
    assert isinstance(exc, redis.exceptions.ResponseError)
    assert status_for(exc)[0] is grpc.StatusCode.INTERNAL


def test_the_store_refuses_a_plain_client() -> None:
    plain = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(TypeError, match="StoreRedis"):
        Store(plain)
