"""The address policy of http targets."""

from __future__ import annotations

import pytest

from schedcore.netpolicy import DEFAULT_DENY, AddressPolicy, ip_literal, parse_networks


def test_default_denies_metadata_and_link_local_only() -> None:
    policy = AddressPolicy.of(DEFAULT_DENY)
    for address in ("169.254.169.254", "169.254.0.1", "fe80::1", "fd00:ec2::254", "100.100.100.200"):
        assert policy.refusal(address), address
    assert policy.refusal("::ffff:169.254.169.254"), "an IPv4-mapped IPv6 address is its IPv4 address"
    for address in ("127.0.0.1", "10.0.0.5", "8.8.8.8", "2001:db8::1", "::1"):
        assert policy.refusal(address) is None, address


def test_allow_list_and_deny_list_together() -> None:
    policy = AddressPolicy.of("10.0.9.0/24", "10.0.0.0/16")
    assert policy.refusal("10.0.1.1") is None
    assert "denied network" in (policy.refusal("10.0.9.9") or "")
    assert "outside the allowed" in (policy.refusal("192.168.0.1") or "")
    assert "outside the allowed" in (policy.refusal("2001:db8::1") or ""), "v6 is not in a v4 allow list"
    assert policy.refusal_any(["10.0.1.1", "10.0.9.1"]), "one refused address refuses the host"


def test_parsing() -> None:
    assert [str(n) for n in parse_networks(" 10.0.0.1 , fe80::/10,,")] == ["10.0.0.1/32", "fe80::/10"]
    assert [str(n) for n in parse_networks("10.0.0.1/8")] == ["10.0.0.0/8"], "host bits are ignored"
    with pytest.raises(ValueError, match=r"'example\.com' is not a network"):
        parse_networks("example.com")
    assert ip_literal("[::1]") == "::1" and ip_literal("127.0.0.1") == "127.0.0.1"
    assert ip_literal("example.com") is None
