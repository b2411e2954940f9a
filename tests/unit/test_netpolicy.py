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


PRIVATE = (
    "127.0.0.1",
    "127.255.0.9",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "169.254.169.254",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "0.0.0.0",
    "0.1.2.3",
    "::",
    "::ffff:0.0.0.0",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
)


def test_deny_private_refuses_every_local_and_private_form() -> None:
    policy = AddressPolicy.of("", deny_private=True)
    for address in PRIVATE:
        why = policy.refusal(address)
        assert why is not None and "HTTP_DENY_PRIVATE" in why, address
    for address in ("8.8.8.8", "100.128.0.1", "172.32.0.1", "2001:4860::8888", "64:ff9b::808:808"):
        assert policy.refusal(address) is None, address
    assert AddressPolicy.of("").refusal("10.1.2.3") is None, "off by default"


def test_nat64_addresses_are_read_as_their_ipv4() -> None:
    policy = AddressPolicy.of(DEFAULT_DENY)
    assert "169.254.169.254" in (policy.refusal("64:ff9b::a9fe:a9fe") or "")
    assert policy.refusal("64:ff9b::808:808") is None


@pytest.mark.parametrize("deny", ["127.0.0.0/8", "127.0.0.1", "::1"])
def test_unspecified_addresses_are_refused_whenever_loopback_is(deny: str) -> None:
    """Connecting to 0.0.0.0 or :: reaches this machine's loopback."""
    policy = AddressPolicy.of(deny)
    for address in ("0.0.0.0", "::", "::ffff:0.0.0.0"):
        assert "loopback" in (policy.refusal(address) or ""), (deny, address)
    assert AddressPolicy.of("10.0.0.0/8").refusal("0.0.0.0") is None
    assert "outside the allowed" in (AddressPolicy.of("", "10.0.0.0/8").refusal("0.0.0.0") or "")
    assert AddressPolicy.of("", "127.0.0.0/8").refusal("0.0.0.0") is None


def test_ip_literal_reads_the_numeric_forms_resolvers_accept() -> None:
    assert ip_literal("2130706433") == "127.0.0.1"
    assert ip_literal("0x7f.1") == "127.0.0.1"
    assert ip_literal("127.1") == "127.0.0.1"
    assert ip_literal("cafe.be") is None and ip_literal("1.example") is None
