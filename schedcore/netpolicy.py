"""Which addresses an http target may reach (HTTP_DENY_NETWORKS, HTTP_ALLOW_NETWORKS).

A scheduler that makes HTTP calls on behalf of its users is a server-side request forgery tool
unless it refuses some destinations. By default it refuses link-local addresses, where every
cloud serves instance metadata and credentials (169.254.169.254 on AWS, GCP, Azure; fd00:ec2::254
on AWS over IPv6), and Alibaba's metadata address. Operators add networks to the deny list, or
name the only networks allowed.

The api refuses a task whose URL names a denied address literally; the executor checks every
address a host name resolves to and connects only to a checked one (services/executor/targets/
guard.py), so a name that resolves to a denied address fails its attempt without a request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENY = "169.254.0.0/16,fe80::/10,fd00:ec2::254/128,100.100.100.200/32"


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


@dataclass(frozen=True)
class AddressPolicy:
    deny: tuple[Network, ...] = ()
    allow: tuple[Network, ...] = ()  # empty: everything not denied

    @classmethod
    def of(cls, deny: str, allow: str = "") -> AddressPolicy:
        return cls(parse_networks(deny), parse_networks(allow))

    def refusal(self, address: str) -> str | None:
        """Why `address` (an IP literal) may not be reached, or None when it may."""
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        for net in self.deny:
            if ip.version == net.version and ip in net:
                return f"address {ip} is in a denied network ({net}; HTTP_DENY_NETWORKS)"
        if self.allow and not any(ip.version == n.version and ip in n for n in self.allow):
            return f"address {ip} is outside the allowed networks (HTTP_ALLOW_NETWORKS)"
        return None

    def refusal_any(self, addresses: Iterable[str]) -> str | None:
        for address in addresses:
            why = self.refusal(address)
            if why is not None:
                return why
        return None


def ip_literal(host: str) -> str | None:
    """`host` as an IP address string when it is one (brackets of IPv6 URLs removed)."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None
