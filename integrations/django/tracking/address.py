"""The client's address: ``REMOTE_ADDR``, or, when that peer is a trusted proxy, the address
the proxies recorded in ``X-Forwarded-For``.

Each proxy appends the address it received the request from, so the header is read from the
right: every hop that is itself a trusted proxy hands over to the hop before it, and the first
address that is not a trusted proxy is the client. What a client writes into the header itself
ends up to the left of that and is never reached, so it cannot stand in for the client's own
address. A peer that is not a trusted proxy is the client, whatever its header says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse(text: str | None) -> IPAddress | None:
    """An address as proxies and servers write it: ``192.0.2.1``, ``192.0.2.1:443``,
    ``2001:db8::1``, ``[2001:db8::1]:443``, ``fe80::1%eth0``; IPv4-mapped IPv6 is the IPv4
    address. ``None`` for anything else (``unknown``, an obfuscated node, garbage)."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_address(meta: Mapping[str, str], proxies: tuple[IPNetwork, ...]) -> IPAddress | None:
    """The client's address for a request's ``META``; ``None`` when the server gave none that
    parses (a server on a Unix socket, say)."""
    address = parse(meta.get("REMOTE_ADDR"))
    if address is None or not proxies or not _trusted(address, proxies):
        return address
    forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
    for hop in reversed(forwarded.split(",")):
        if not _trusted(address, proxies):
            break
        previous = parse(hop)
        if previous is None:
            # A trusted proxy wrote something that is no address: it is the last one we know.
            break
        address = previous
    return address
