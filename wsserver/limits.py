"""Limits that keep one client, or one host, from taking what others need.

- :class:`Admission`: connections still authenticating (handshake done, no
  token decided yet), in all and per client address. Unauthenticated sockets
  cost a slot and, for tokens of the right shape, a query: without a bound of
  their own, one host could hold every slot, again and again.
- :func:`client_address`: who the client is, behind trusted proxies.
- :class:`Slots`: resumes replaying history at once, in all and per user.

:class:`Admission` and :func:`client_address` are plain Python; :class:`Slots`
waits with asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Hashable, Sequence

__all__ = ["Admission", "Slots", "address_key", "client_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(
    peer: str, forwarded_for: str | None, trusted: Sequence[Network]
) -> str:
    """The client's address: the peer's, or from X-Forwarded-For if the peer
    is a trusted proxy.

    Proxies append the address they received from, so the header reads
    "client, proxy1, proxy2": the client is the rightmost address that is not
    a trusted proxy. Anything left of it could be forged by the client; so,
    when every hop is a trusted proxy, the client is the rightmost hop, the
    one the last proxy saw.
    """
    if not trusted or forwarded_for is None or not _is_trusted(peer, trusted):
        return peer
    hops = [_host(hop) for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[-1] if hops else peer


def _host(hop: str) -> str:
    """An address without the port some proxies add: 1.2.3.4:5, [::1]:5."""
    hop = hop.strip()
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def address_key(address: str) -> str:
    """What counts as one client: an IPv4 address, or an IPv6 /64 (one host
    or site gets a whole /64, so single IPv6 addresses are free to vary)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Admission:
    """Count connections still authenticating, in all and per client address."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address  # 0: no limit
        self._count = 0
        self._by_address: dict[str, int] = {}

    def __len__(self) -> int:
        return self._count

    def admit(self, key: str) -> str | None:
        """Count one more for ``key``, or say which limit it is over."""
        if self._count >= self.total:
            return "too many connections authenticating"
        held = self._by_address.get(key, 0)
        if self.per_address and held >= self.per_address:
            return "too many connections authenticating from this address"
        self._count += 1
        self._by_address[key] = held + 1
        return None

    def release(self, key: str) -> None:
        """Count one less for ``key``: undo an :meth:`admit` that succeeded."""
        self._count -= 1
        held = self._by_address[key] - 1
        if held:
            self._by_address[key] = held
        else:
            del self._by_address[key]


class Slots:
    """At most ``total`` holders at once, and ``per_key`` per key; others wait."""

    def __init__(self, total: int, per_key: int) -> None:
        self.per_key = per_key
        self._total = asyncio.Semaphore(total)
        self._by_key: dict[Hashable, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def taken(self, key: Hashable) -> AsyncIterator[None]:
        """Hold a slot for ``key`` and one in all inside the block; wait for both.

        The key's slot is taken first, so that a key waiting behind its own holders
        keeps none of the total from others. A key's semaphore is kept only while
        someone holds or waits for it.
        """
        semaphore, users = self._by_key.get(key, (None, 0))
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.per_key)
        self._by_key[key] = (semaphore, users + 1)
        try:
            async with semaphore, self._total:
                yield
        finally:
            semaphore, users = self._by_key[key]
            if users == 1:
                del self._by_key[key]
            else:
                self._by_key[key] = (semaphore, users - 1)
