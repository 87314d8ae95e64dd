"""Who the client is: the TCP peer, or X-Forwarded-For only when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pydantic
import pytest

from fechatter.client_address import (
    UNKNOWN_PEER,
    client_address,
    parse_address,
    parse_networks,
    throttle_key,
)
from tests.conftest import make_settings

PROXIES = parse_networks(["10.0.0.0/8", "::1"])


def who(peer: str | None, *xff: str) -> str:
    return throttle_key(client_address(peer, list(xff), PROXIES))


def test_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert who("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert throttle_key(client_address("203.0.113.9", ["198.51.100.1"], ())) == "203.0.113.9"


def test_trusted_peer_names_the_rightmost_untrusted_hop() -> None:
    assert who("10.0.0.1", "198.51.100.7") == "198.51.100.7"
    # Left of the client's own address is whatever the client wrote: ignored.
    assert who("10.0.0.1", "1.1.1.1, 198.51.100.7") == "198.51.100.7"
    # A chain of trusted proxies is walked through.
    assert who("10.0.0.1", "198.51.100.7, 10.9.9.9") == "198.51.100.7"
    # Several headers form one list, in order.
    assert who("10.0.0.1", "1.1.1.1", "198.51.100.7, 10.2.2.2") == "198.51.100.7"
    assert who("::1", "[2001:db8::5]:443") == "2001:db8::/64"


def test_trusted_peer_without_usable_header_is_itself() -> None:
    assert who("10.0.0.1") == "10.0.0.1"
    assert who("10.0.0.1", "") == "10.0.0.1"
    # Garbage stops the walk at the nearest trusted hop: it cannot be used to rotate identities.
    assert who("10.0.0.1", "198.51.100.7, not-an-ip") == "10.0.0.1"
    assert who("10.0.0.1", "198.51.100.7, not-an-ip, 10.3.3.3") == "10.3.3.3"
    # Every hop trusted: the leftmost one.
    assert who("10.0.0.1", "10.4.4.4, 10.5.5.5") == "10.4.4.4"


def test_address_forms() -> None:
    assert parse_address("198.51.100.7:8080") == ipaddress.ip_address("198.51.100.7")
    assert parse_address("[2001:db8::1]:80") == ipaddress.ip_address("2001:db8::1")
    assert parse_address("::ffff:198.51.100.7") == ipaddress.ip_address("198.51.100.7")
    assert parse_address(" unknown ") is None
    assert parse_address("1" * 5000) is None
    assert parse_address("\ud83d") is None


def test_throttle_keys_group_ipv6_by_64_and_name_socketless_peers() -> None:
    assert who("2001:db8:1:2:aaaa::1") == who("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert who("2001:db8:1:3::1") != who("2001:db8:1:2::1")
    assert who(None, "198.51.100.7") == UNKNOWN_PEER


def test_trusted_proxies_setting_is_validated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, trusted_proxies=["10.0.0.0/8", "192.168.1.1", "fd00::/8"])
    assert len(parse_networks(settings.trusted_proxies)) == 3
    assert make_settings(tmp_path).trusted_proxies == []
    with pytest.raises(pydantic.ValidationError, match="not an IP address or CIDR"):
        make_settings(tmp_path, trusted_proxies=["proxy.example.com"])
