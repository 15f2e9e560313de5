"""Limits on connections still authenticating and on resumes at once.

Pure units of wsserver.limits, then real sidecars and raw sockets from
several loopback addresses (127.0.0.1, 127.0.0.2, ...: other hosts).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

import pytest
from clients import assert_no_event, authenticate, closed_with
from processes import SidecarProcess
from rawclient import RawClient, close_code
from waiting import eventually, units
from websockets.frames import Frame, Opcode

from wsserver.limits import Admission, Slots, address_key, client_address

# Pure units

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1")]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.7", None, "203.0.113.7"),
        # Not from a trusted proxy: the header is the client's, ignored.
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        # The rightmost address that is not a proxy: the left is forgeable.
        ("10.1.2.3", "1.1.1.1, 198.51.100.1, 10.9.9.9", "198.51.100.1"),
        ("127.0.0.1", " 198.51.100.1 ,", "198.51.100.1"),
        # Only proxies: the last one's peer (the left could be forged).
        ("10.1.2.3", "10.0.0.5, 10.0.0.6", "10.0.0.6"),
        # Ports, as some proxies write them, are not part of the address.
        ("10.1.2.3", "198.51.100.1:5555", "198.51.100.1"),
        ("10.1.2.3", "[2001:db8::1]:5555", "2001:db8::1"),
        ("10.1.2.3", "2001:db8::1", "2001:db8::1"),
        ("10.1.2.3", "", "10.1.2.3"),
        ("10.1.2.3", "garbage", "garbage"),
    ],
)
def test_client_address(peer, forwarded_for, client):
    assert client_address(peer, forwarded_for, PROXIES) == client


def test_without_trusted_proxies_the_header_is_ignored():
    assert client_address("10.1.2.3", "198.51.100.1", []) == "10.1.2.3"


def test_address_key():
    assert address_key("203.0.113.7") == "203.0.113.7"
    # One IPv6 host or site has a /64 of its own.
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2::ffff")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("not an address") == "not an address"


def test_admission_counts_in_all_and_per_address():
    admission = Admission(total=3, per_address=2)
    assert admission.admit("a") is None
    assert admission.admit("a") is None
    assert "address" in admission.admit("a")
    assert admission.admit("b") is None
    assert admission.admit("c") == "too many connections authenticating"
    assert len(admission) == 3
    admission.release("a")
    assert admission.admit("c") is None
    for key in ["a", "b", "c"]:
        admission.release(key)
    assert len(admission) == 0
    assert admission._by_address == {}


def test_admission_without_a_per_address_limit():
    admission = Admission(total=100, per_address=0)
    assert all(admission.admit("a") is None for _ in range(100))
    assert admission.admit("a") is not None


async def test_slots_per_key_and_in_all():
    slots = Slots(total=2, per_key=1)
    order = []
    release = asyncio.Event()

    async def hold(key: str, name: str) -> None:
        async with slots.taken(key):
            order.append(name)
            await release.wait()

    tasks = [
        asyncio.create_task(hold("alice", "alice 1")),
        asyncio.create_task(hold("alice", "alice 2")),  # waits for alice 1
        asyncio.create_task(hold("bob", "bob 1")),
        asyncio.create_task(hold("carol", "carol 1")),  # waits: 2 in all
    ]
    await eventually(lambda: len(order) >= 2, 1, "two holders", in_thread=False)
    assert order == ["alice 1", "bob 1"]
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(order) == ["alice 1", "alice 2", "bob 1", "carol 1"]
    assert slots._by_key == {}


async def test_a_cancelled_waiter_gives_its_turn_back():
    slots = Slots(total=1, per_key=1)
    async with slots.taken("alice"):
        waiter = asyncio.create_task(slots.taken("alice").__aenter__())
        await eventually(
            lambda: slots._by_key["alice"][1] == 2, 1, "waiting", in_thread=False
        )
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(units(1)), slots.taken("alice"):
        pass
    assert slots._by_key == {}


# Real sidecars


async def handshake_status(port: int, **options) -> int | RawClient:
    """A raw client that sends no token yet, or the HTTP status refusing it."""
    try:
        return await RawClient.connect(port, **options)
    except ConnectionError as refused:
        return int(str(refused).split()[1])


@pytest.mark.e2e
async def test_connections_still_authenticating_have_limits_of_their_own(
    site, start_sidecar
):
    sidecar = start_sidecar(
        WS_MAX_CONNECTIONS="10",
        WS_MAX_AUTHENTICATING="50%",
        WS_MAX_AUTHENTICATING_PER_ADDRESS="2",
        SESAME_MAX_AGE="3600",
    )
    token = site.token("alice")
    # One host holds at most 2 unauthenticated sockets...
    first = [await handshake_status(sidecar.port) for _ in range(2)]
    assert all(isinstance(client, RawClient) for client in first)
    assert await handshake_status(sidecar.port) == 503
    # ... other hosts get theirs, up to 5 (50%) in all ...
    others = [
        await handshake_status(sidecar.port, source=f"127.0.0.{n}") for n in (2, 2, 3)
    ]
    assert all(isinstance(client, RawClient) for client in others)
    assert await handshake_status(sidecar.port, source="127.0.0.4") == 503
    # ... and authenticated users are never locked out by them.
    for client in first:
        client.send_text(token)
    await sidecar.until_connections(2)
    user = await authenticate(sidecar.url, token)
    await assert_no_event(user, 0.2)
    assert user.close_code is None
    assert sidecar._metric("wsserver_handshakes_refused_total{") == 2
    await user.close()
    for client in [*first, *others]:
        client.abort()


def forwarded(*addresses: str) -> dict:
    """X-Forwarded-For, one header line per address."""
    return {"headers": [("X-Forwarded-For", address) for address in addresses]}


@pytest.mark.e2e
async def test_behind_a_trusted_proxy_the_forwarded_address_counts(start_sidecar):
    sidecar = start_sidecar(
        WS_MAX_AUTHENTICATING_PER_ADDRESS="1", WS_TRUSTED_PROXIES="127.0.0.1"
    )
    one = await handshake_status(sidecar.port, **forwarded("198.51.100.1"))
    two = await handshake_status(sidecar.port, **forwarded("198.51.100.2"))
    assert isinstance(one, RawClient) and isinstance(two, RawClient)
    assert await handshake_status(sidecar.port, **forwarded("198.51.100.1")) == 503
    # Not from the proxy: the header is not believed, the peer counts.
    other = "127.0.0.2"
    three = await handshake_status(
        sidecar.port, source=other, **forwarded("198.51.100.3")
    )
    assert isinstance(three, RawClient)
    refused = await handshake_status(
        sidecar.port, source=other, **forwarded("198.51.100.4")
    )
    assert refused == 503
    # A proxy that adds a line of its own rather than append: its (the
    # rightmost) address counts, not what the client wrote.
    four = await handshake_status(
        sidecar.port, **forwarded("203.0.113.9", "198.51.100.5")
    )
    assert isinstance(four, RawClient)
    again = forwarded("203.0.113.10", "198.51.100.5")
    assert await handshake_status(sidecar.port, **again) == 503
    assert "Traceback" not in sidecar.log()
    for client in (one, two, three, four):
        client.abort()


@pytest.mark.e2e
async def test_a_refused_handshake_frees_nothing_it_did_not_take(start_sidecar):
    # Slots are given back whatever happens: timeouts, refusals, aborts.
    sidecar = start_sidecar(WS_MAX_AUTHENTICATING_PER_ADDRESS="3", WS_AUTH_TIMEOUT="1")
    silent = [await handshake_status(sidecar.port) for _ in range(3)]
    assert await handshake_status(sidecar.port) == 503
    for client in silent:  # the authentication timeout frees them
        assert close_code(await client.read_until_closed(10)) == 1008
    bad = await authenticate(sidecar.url, "not a token")
    assert await closed_with(bad) == (1011, "authentication failed")
    aborted = await handshake_status(sidecar.port)
    aborted.abort()
    await all_slots_free(sidecar)
    again = [await handshake_status(sidecar.port) for _ in range(3)]
    assert all(isinstance(client, RawClient) for client in again)
    for client in again:
        client.abort()


@pytest.mark.e2e
async def test_a_handshake_that_dies_before_it_ends_gives_its_slot_back(
    start_sidecar,
):
    # The request and a ping in one packet, then a reset: websockets answers
    # the ping while the handshake is under way, the write fails and the
    # socket is gone before the handshake ends. Such sockets once kept their
    # slot forever: a few dozen locked an address out.
    sidecar = start_sidecar(WS_MAX_AUTHENTICATING_PER_ADDRESS="5")
    request = (
        "GET / HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{sidecar.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode() + Frame(Opcode.PING, b"p").serialize(mask=True, extensions=[])
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", sidecar.port)) as sock:
            sock.sendall(request)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    await all_slots_free(sidecar)
    clients = [await handshake_status(sidecar.port) for _ in range(5)]
    assert all(isinstance(client, RawClient) for client in clients)
    for client in clients:
        client.abort()


async def all_slots_free(sidecar: SidecarProcess) -> None:
    await eventually(
        lambda: sidecar._metric("wsserver_authenticating ") == 0, 5, "all freed"
    )
