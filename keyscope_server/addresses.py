"""Addresses: whether a listen address lets only this machine in, and who a caller's peer address says it is."""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote

__all__ = ["is_loopback", "peer_address"]


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server listening on `host`: 127.0.0.0/8, ::1 or the name localhost.

    0.0.0.0 and :: listen on every interface, and any other name may resolve to anything.
    """
    host = host.strip("[]")  # [::1], as gRPC addresses spell IPv6
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def peer_address(peer: str) -> str:
    """The caller's address in gRPC's `context.peer()`, without its port: "ipv4:127.0.0.1:54321" -> "127.0.0.1".

    An IPv6 caller is its /64 ("ipv6:[2001:db8::7]:443" -> "2001:db8::/64"), the block one host is usually given,
    so that a host cannot escape a per-address budget by taking another address of its own; an IPv4-mapped one is
    its IPv4 address. Every Unix-socket caller is "unix"; anything else is the peer string whole.
    """
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)  # gRPC writes peers as URIs: ipv6:%5B::1%5D:54321
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition("]")[0].lstrip("[") if rest.startswith("[") else rest
        host = host.partition("%")[0]  # a zone id (fe80::1%eth0) names the interface, not the caller
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return peer
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    if kind in ("unix", "unix-abstract"):
        return "unix"
    return peer
