"""Which addresses an http target may reach (HTTP_DENY_NETWORKS, HTTP_ALLOW_NETWORKS,
HTTP_DENY_PRIVATE).

A scheduler that makes HTTP calls on behalf of its users is a server-side request forgery tool
unless it refuses some destinations. By default it refuses link-local addresses, where every
cloud serves instance metadata and credentials (169.254.169.254 on AWS, GCP, Azure; fd00:ec2::254
on AWS over IPv6), and Alibaba's metadata address. Operators add networks to the deny list, name
the only networks allowed, or refuse every loopback and private network (HTTP_DENY_PRIVATE: the
services' own ports, Redis, the cluster's pods).

An address is judged as the address it reaches: an IPv4-mapped (::ffff:a.b.c.d) or NAT64
(64:ff9b::a.b.c.d) address as its IPv4 address, and the unspecified addresses (0.0.0.0, ::), which
connect to this machine, as its loopback: refused whenever either loopback address is denied.

The api refuses a task whose URL names a denied address literally; the executor checks every
address a host name resolves to and connects only to a checked one (services/executor/targets/
guard.py), so a name that resolves to a denied address fails its attempt without a request.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schedcore.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY = "169.254.0.0/16,fe80::/10,fd00:ec2::254/128,100.100.100.200/32"
# HTTP_DENY_PRIVATE: "this network", RFC 1918, carrier-grade NAT (RFC 6598), loopback,
# link-local, unique local (fc00::/7) and the unspecified addresses.
PRIVATE: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOOPBACK: dict[int, Address] = {4: ipaddress.ip_address("127.0.0.1"), 6: ipaddress.ip_address("::1")}
# The numeric IPv4 forms resolvers accept besides a.b.c.d: 2130706433, 0x7f.1, 127.1.
_NUMERIC_V4 = re.compile(r"^[0-9a-fA-FxX.]+$")


def parse_networks(raw: str) -> tuple[Network, ...]:
    """Comma-separated networks or addresses. Raises ValueError naming the bad item."""
    out: list[Network] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (like 10.0.0.0/8) or an address") from None
    return tuple(out)


def reached(ip: Address) -> Address:
    """The address a connection to `ip` reaches: IPv4-mapped and NAT64 addresses as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _in(ip: Address, networks: Iterable[Network]) -> Network | None:
    return next((n for n in networks if ip.version == n.version and ip in n), None)


@dataclass(frozen=True)
class AddressPolicy:
    deny: tuple[Network, ...] = ()
    allow: tuple[Network, ...] = ()  # empty: everything not denied
    deny_private: bool = False

    @classmethod
    def of(cls, deny: str, allow: str = "", *, deny_private: bool = False) -> AddressPolicy:
        return cls(parse_networks(deny), parse_networks(allow), deny_private)

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls.of(
            settings.http_deny_networks, settings.http_allow_networks, deny_private=settings.http_deny_private
        )

    def refusal(self, address: str) -> str | None:
        """Why `address` (an IP literal) may not be reached, or None when it may."""
        ip = reached(ipaddress.ip_address(address))
        if not ip.is_unspecified:
            return self._denied(ip) or self._outside(ip)
        for loopback in LOOPBACK.values():
            why = self._denied(loopback)
            if why is not None:
                return f"address {ip} reaches this machine's loopback, and {why}"
        return self._denied(ip) or self._outside(LOOPBACK[ip.version])

    def _denied(self, ip: Address) -> str | None:
        net = _in(ip, self.deny)
        if net is not None:
            return f"address {ip} is in a denied network ({net}; HTTP_DENY_NETWORKS)"
        if self.deny_private and (net := _in(ip, PRIVATE)) is not None:
            return f"address {ip} is loopback or private ({net}; HTTP_DENY_PRIVATE)"
        return None

    def _outside(self, ip: Address) -> str | None:
        if self.allow and _in(ip, self.allow) is None:
            return f"address {ip} is outside the allowed networks (HTTP_ALLOW_NETWORKS)"
        return None

    def refusal_any(self, addresses: Iterable[str]) -> str | None:
        for address in addresses:
            why = self.refusal(address)
            if why is not None:
                return why
        return None


def ip_literal(host: str) -> str | None:
    """`host` as an IP address string when it is one (brackets of IPv6 URLs removed), including
    the numeric IPv4 forms a resolver would read as one."""
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _NUMERIC_V4.match(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None
