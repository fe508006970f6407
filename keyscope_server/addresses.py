"""What a listen address exposes: whether only this machine can reach it."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


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
