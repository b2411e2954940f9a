"""The store's client turns every Redis failure a retry may cure into StoreUnavailable (commands,
pipelines, scripts), which the one error map sends as UNAVAILABLE; no layer above the store
catches redis-py's exceptions."""

import asyncio

import grpc
import pytest
import redis.exceptions

from schedcore import redisconn
from schedcore.errors import StoreUnavailable, status_for
from schedcore.settings import Settings
from schedcore.store import Store
from tests.support import free_port


def _client() -> redisconn.StoreRedis:
    return redisconn.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)


async def _fails(call: str, client: redisconn.StoreRedis | redisconn.StoreRedisCluster) -> StoreUnavailable:
    """What `call` on `client` (nothing listens where it points) raises. Keys carry partition
    hash tags, so a cluster client sends each to one slot."""
    try:
        if call == "command":
            await client.get("{0}k")
        elif call == "pipeline":
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("{0}k")
                pipe.set("{1}k", "v")
                await pipe.execute()
        elif call == "script":
            await client.register_script("return 1")(keys=["{0}k"])
        else:
            await Store(client, "ts", 2).ping()
    except StoreUnavailable as exc:
        return exc
    finally:
        await client.aclose()
    raise AssertionError(f"{call} on a closed port did not fail")


@pytest.mark.parametrize("call", ["command", "pipeline", "script"])
def test_a_refused_connection_is_store_unavailable(call: str) -> None:
    exc = asyncio.run(_fails(call, _client()))
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
    with pytest.raises(TypeError, match="StoreRedis or StoreRedisCluster"):
        Store(plain)


def _cluster() -> redisconn.StoreRedisCluster:
    settings = Settings(redis_cluster_nodes=(("127.0.0.1", free_port()),), redis_timeout_s=1.0)
    client = redisconn.connect(settings)
    assert isinstance(client, redisconn.StoreRedisCluster)
    return client


@pytest.mark.parametrize("call", ["command", "pipeline", "script", "ping"])
def test_a_cluster_no_node_of_which_answers_is_store_unavailable(call: str) -> None:
    exc = asyncio.run(_fails(call, _cluster()))
    assert isinstance(exc.__cause__, redis.exceptions.RedisClusterException)  # "cannot be connected"
    assert status_for(exc)[0] is grpc.StatusCode.UNAVAILABLE


def test_cluster_client_takes_credentials_and_tls_from_redis_url_not_its_address() -> None:
    settings = Settings(
        redis_url="rediss://app:s3cret@ignored.example:1234/0",
        redis_cluster_nodes=(("redis-0", 6379), ("redis-1", 6380)),
        redis_timeout_s=3.0,
    )
    client = redisconn.connect(settings)
    assert isinstance(client, redisconn.StoreRedisCluster)
    kwargs = client.get_connection_kwargs()
    assert (kwargs["username"], kwargs["password"]) == ("app", "s3cret")
    assert kwargs["connection_class"] is redis.asyncio.connection.SSLConnection
    assert kwargs["socket_timeout"] == 3.0
    assert [(n.host, n.port) for n in client.startup_nodes] == [("redis-0", 6379), ("redis-1", 6380)]
    assert isinstance(Store(client, "ts", 4).redis, redisconn.StoreRedisCluster)
    asyncio.run(client.aclose())
