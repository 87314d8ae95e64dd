"""Who is the client: the TCP peer, or what ``X-Forwarded-For`` says when the peer is a proxy we
trust (the ``trusted_proxies`` setting). Pure functions over strings; no framework imports, so
both listeners can use them.

``X-Forwarded-For`` is a comma-separated list that each proxy extends on the right with the
address of its own peer. Only the entries appended by trusted proxies are believable, so the
list is read from the right: the first entry that is not itself a trusted proxy is the client.
Anything left of it was written by the client and is ignored. A malformed entry stops the walk
and the nearest trusted proxy counts as the client (a throttle then falls on the proxy, which
is safe; believing the garbage would let a client rotate its identity at will).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A peer the socket layer could not name (a Unix socket): one shared identity.
UNKNOWN_PEER = "unknown"
# IPv6 hosts get a /64 each; throttling single addresses would let one host rotate 2^64 keys.
IPV6_KEY_PREFIX = 64


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse IPs or CIDRs (``"10.0.0.0/8"``, ``"::1"``); raises ``ValueError`` on a bad one.

    Host bits are allowed (``10.1.2.3/8`` means ``10.0.0.0/8``).
    """
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


def parse_address(text: str) -> IPAddress | None:
    """An IP from a peer name or an ``X-Forwarded-For`` entry, else None.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:80``; IPv4-mapped
    IPv6 (``::ffff:1.2.3.4``) is returned as the IPv4 address.
    """
    text = text.strip()
    if len(text) > 64:  # longer than any address with a port and a zone
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> IPAddress | None:
    """The client's IP: the ``peer`` unless it is in ``trusted``, then per ``forwarded_for``.

    ``forwarded_for`` holds every ``X-Forwarded-For`` header value in order (several headers
    mean one comma-joined list). None when the peer has no IP address (a Unix socket).
    """
    address = parse_address(peer) if peer is not None else None
    if address is None or not _in(address, trusted):
        return address
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        parsed = parse_address(hop)
        if parsed is None:
            break
        address = parsed
        if not _in(address, trusted):
            break
    return address


def throttle_key(address: IPAddress | None) -> str:
    """The key a per-address throttle counts under: the IPv4 address, or the IPv6 /64."""
    if address is None:
        return UNKNOWN_PEER
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_KEY_PREFIX), strict=False))
    return str(address)


def _in(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)
