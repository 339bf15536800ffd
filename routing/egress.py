"""Where a tenant-given URL may make yoloq connect (pure): public addresses, and inside networks only where allowed.

A webhook URL is chosen by a team's key, but the POST leaves from inside the fleet: without this rule a tenant could
make the notifier reach what only the fleet can reach (SSRF): the cloud metadata service (169.254.169.254, which
hands out credentials), internal HTTP services without auth of their own, ports on the notifier's own host, and read
how it went back from ``yoloq webhook test``. So an address is refused when it is loopback, private (RFC 1918,
unique-local), link-local, shared (CGNAT), multicast, unspecified or reserved, unless it lies in a network the
operator allowed
(``YOLOQ_WEBHOOK_ALLOW_PRIVATE``, e.g. ``10.20.0.0/16`` for an internal chat bot). An IPv4 address written as IPv6
(``::ffff:127.0.0.1``) is judged as the IPv4 address it is. Every address a name resolves to is checked at connect
time and the connection goes to a checked one, so a name that resolves to a public address when stored and to an
inside one later (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(text: str) -> tuple[Network, ...]:
    """The operator's allowed networks from ``a/b, c/d``; ValueError names a bad entry (settings reject it at load)."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            found.append(ipaddress.ip_network(part, strict=False))
        except ValueError as err:
            raise ValueError(f"{part[:60]!r} is not a network (e.g. 10.0.0.0/8 or 127.0.0.1/32): {err}") from None
    return tuple(found)


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Which inside range ``ip`` is in ("" when it is public)."""
    ranges = (("loopback", ip.is_loopback), ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
              ("unspecified", ip.is_unspecified), ("private", ip.is_private), ("reserved", ip.is_reserved),
              ("non-public", not ip.is_global))  # fmt: skip
    return next((name for name, inside in ranges if inside), "")


def address_problem(address: str, allowed: Iterable[Network]) -> str | None:
    """Why a webhook may not connect to ``address`` (an IP literal), or None: inside addresses reach what only the
    fleet should reach."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is still link-local
    except ValueError:
        return f"{address[:80]!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    kind = _kind(ip)
    if not kind:
        return None
    return (f"{ip} is a {kind} address, inside the fleet: webhooks go to public addresses only "
            "(an operator may allow a network with YOLOQ_WEBHOOK_ALLOW_PRIVATE)")  # fmt: skip


def host_problem(host: str, allowed: Iterable[Network]) -> str | None:
    """Why a URL's host is refused before any lookup (an inside IP literal), or None: names are judged at connect."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return None
    return address_problem(bare, allowed)
