"""keyscope_server.addresses.peer_address: the address a throttle counts a caller's failures under."""

from __future__ import annotations

import pytest

from keyscope_server.addresses import peer_address


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:54321", "127.0.0.1"),
        ("ipv4:10.1.2.3:443", "10.1.2.3"),
        ("ipv6:%5B::1%5D:54321", "::/64"),  # as gRPC spells it
        ("ipv6:[::1]:54321", "::/64"),
        ("ipv6:%5B2001:db8:1:2::7%5D:443", "2001:db8:1:2::/64"),
        ("ipv6:%5B2001:db8:1:2:ffff::9%5D:443", "2001:db8:1:2::/64"),  # the same host's other address
        ("ipv6:%5B::ffff:10.0.0.1%5D:80", "10.0.0.1"),
        ("ipv6:%5Bfe80::1%25eth0%5D:80", "fe80::/64"),
        ("unix:/run/keyscope.sock", "unix"),
        ("unix-abstract:keyscope", "unix"),
        ("something-else", "something-else"),
    ],
)
def test_ok_the_ip_part_of_a_peer(peer: str, address: str) -> None:
    assert peer_address(peer) == address
