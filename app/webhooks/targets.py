"""Where webhooks may go: no private, loopback, link-local or reserved address (SSRF).

A URL is checked when an endpoint is saved and its host is resolved again at every connect,
and the connection goes to the address that was checked: a name that resolved to a public
address at creation and to 169.254.169.254 later (DNS rebinding) is refused then. Operators
allow their own internal networks with RADAR_WEBHOOK_ALLOWED_NETWORKS.

An IPv6 address that carries an IPv4 one (NAT64, 6to4, IPv4-mapped, -compatible and
-translated) reaches that IPv4 address through a translator or tunnel, so the IPv4 rules
judge it: 64:ff9b::a00:1 is 10.0.0.1. Ranges whose IPv4 address cannot be read reliably
(Teredo obfuscates it, local-use NAT64 puts it where its operator chose) or that are private
by definition (site-local, deprecated but still routed inside some networks) are refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to
Resolver = Callable[[str, int], Awaitable[list[str]]]


class TargetRefused(httpcore.ConnectError):
    """The target is not allowed; raised before any packet is sent to it."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# IPv6 prefixes whose last 32 bits are the IPv4 address packets are delivered to.
_IPV4_IN_LAST_32_BITS = tuple(
    ipaddress.IPv6Network(prefix)
    for prefix in (
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b::/96",  # NAT64, the well-known prefix
        "::/96",  # IPv4-compatible (deprecated)
    )
)
# IPv6 ranges never taken, whatever they carry.
_REFUSED_IPV6 = {
    # The IPv4 address sits wherever the network's operator chose.
    ipaddress.IPv6Network("64:ff9b:1::/48"): "a local-use NAT64 address",
    # The client's IPv4 address is obfuscated, and relayed by a server of the tunnel's choice.
    ipaddress.IPv6Network("2001::/32"): "a Teredo address",
    # Deprecated, but private wherever it is still routed.
    ipaddress.IPv6Network("fec0::/10"): "a site-local address",
}


def carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through a translator or tunnel, if any."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if int(ip) <= 1:
        return None  # :: and ::1 are themselves (RFC 4291), not IPv4-compatible addresses
    if any(ip in prefix for prefix in _IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def refusal(address: str, allowed: Iterable[Network]) -> str | None:
    """Why `address` may not be a webhook target, or None when it may."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    allowed = tuple(allowed)
    if any(ip in network for network in allowed):
        return None  # the operator's word wins over every rule below
    if isinstance(ip, ipaddress.IPv6Address):
        return _ipv6_refusal(ip, allowed)
    return _plain_refusal(ip)


def _ipv6_refusal(ip: ipaddress.IPv6Address, allowed: tuple[Network, ...]) -> str | None:
    carried = carried_ipv4(ip)
    if carried is not None:
        if any(carried in network for network in allowed) or _plain_refusal(carried) is None:
            return None
        return f"{ip} carries {carried}, a private, loopback, link-local or reserved address"
    for prefix, kind in _REFUSED_IPV6.items():
        if ip in prefix:
            return f"{ip} is {kind}, whose destination cannot be checked"
    return _plain_refusal(ip)


def _plain_refusal(ip: IPAddress) -> str | None:
    if ip.is_global and not ip.is_multicast:
        return None
    return f"{ip} is a private, loopback, link-local or reserved address"


async def check_host(
    host: str, port: int, allowed: Sequence[Network], resolver: Resolver
) -> list[str]:
    """The host's addresses, all of them allowed; TargetRefused otherwise."""
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        try:
            addresses = await resolver(host, port)
        except (OSError, UnicodeError) as exc:  # (a name IDNA refuses: label empty, too long)
            raise TargetRefused(f"cannot resolve {host}: {exc}") from exc
    if not addresses:
        raise TargetRefused(f"{host} resolves to no address")
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is not None:
            raise TargetRefused(f"{host} refused: {reason}")
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host at connect time, then connects to a checked address."""

    def __init__(self, allowed: Sequence[Network], resolver: Resolver) -> None:
        self._allowed = allowed
        self._resolver = resolver
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await check_host(host, port, self._allowed, self._resolver)
        return await self._backend.connect_tcp(
            addresses[0], port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("webhooks are never sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


KEEPALIVE_EXPIRY_SECONDS = 4.0


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, whose connection pool dials through `_GuardedBackend`.

    httpx does not take a network backend, so the pool it built is replaced by an identical
    one that has it (TLS still verifies the certificate against the URL's host name).
    """

    def __init__(self, allowed: Sequence[Network], resolver: Resolver, max_connections: int):
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            # Under the 5 s after which many servers (uvicorn, Node) close an idle connection:
            # reusing one as its server closes it is a reset, and a failed attempt.
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
            network_backend=_GuardedBackend(allowed, resolver),
        )
