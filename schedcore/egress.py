"""Outbound http (http targets' calls, alert deliveries) goes only where the address policy
allows (schedcore/netpolicy.py).

A network backend for httpcore: it resolves the host itself, refuses the connection when any of
its addresses is refused, and connects to a checked address, so a name cannot resolve to an
allowed address for the check and a denied one for the connection (DNS rebinding). TLS still
verifies the certificate against the host name: httpcore starts TLS with the URL's host.

Proxies come from HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, read as httpx reads them. A
proxied request's own host is resolved and judged by the policy before the request goes to the
proxy, which then connects to it by name: the proxy's resolver has the last word, so give the
proxy an egress policy of its own. The proxy's address is the operator's choice and not judged
(HTTP_DENY_PRIVATE would otherwise refuse every proxy in the cluster).
"""

from __future__ import annotations

import asyncio
import socket
import typing

import httpcore
import httpx
from httpx._utils import get_environment_proxies  # how httpx reads the proxy variables

from schedcore.netpolicy import AddressPolicy, ip_literal


class AddressRefused(httpcore.ConnectError):
    """The destination is not allowed: the attempt fails without a request, and is not retried."""


async def checked_addresses(policy: AddressPolicy, host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, all allowed; else AddressRefused (or ConnectError when
    it does not resolve)."""
    literal = ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    why = policy.refusal_any(addresses)
    if why is not None:
        raise AddressRefused(f"{host}: {why}")
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(self.policy, host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not a target")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on a GuardedBackend."""

    def __init__(self, policy: AddressPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=True),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


class ProxiedTransport(httpx.AsyncBaseTransport):
    """httpx's transport through one proxy, for requests whose own host the policy allows."""

    def __init__(self, proxy: str, policy: AddressPolicy, limits: httpx.Limits) -> None:
        self.policy = policy
        self.inner = httpx.AsyncHTTPTransport(proxy=proxy, limits=limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        try:
            await checked_addresses(self.policy, url.host, url.port or (443 if url.scheme == "https" else 80))
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def proxy_mounts(policy: AddressPolicy, limits: httpx.Limits) -> dict[str, httpx.AsyncBaseTransport | None]:
    """httpx client mounts for the proxy variables of this process's environment: a pattern
    (`http://`, `all://*example.com`) to its proxy's transport, or to None (NO_PROXY: the
    client's own, guarded transport)."""
    return {
        pattern: None if proxy is None else ProxiedTransport(proxy, policy, limits)
        for pattern, proxy in get_environment_proxies().items()
    }
