"""Metrics scraped after real traffic, and logs as JSON lines."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import redis
from clients import (
    authenticate,
    closed_with,
    publish_like_the_publisher,
    receive_event,
)
from faults import ThrowawayRedis
from processes import MainSite, SidecarProcess, free_port, http_status
from prometheus_client.parser import text_string_to_metric_families
from waiting import eventually, wait_for

from wsserver.config import ConfigError, load_config
from wsserver.metrics import Metrics

pytestmark = pytest.mark.e2e


# Pure units


def delay_count(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("wsserver_event_delay_seconds_count")


def test_the_delay_is_measured_from_the_time_in_the_event_id():
    metrics = Metrics()
    metrics.observe_delay("1700000000250-3", now=lambda: 1700000000.300)
    assert delay_count(metrics) == 1
    total = metrics.registry.get_sample_value("wsserver_event_delay_seconds_sum")
    assert total == pytest.approx(0.05)
    bucket = metrics.registry.get_sample_value(
        "wsserver_event_delay_seconds_bucket", {"le": "0.05"}
    )
    assert bucket == 1


def test_events_without_a_usable_id_are_not_observed():
    metrics = Metrics()
    for event_id in [None, "", "abc-1", "-1"]:
        metrics.observe_delay(event_id, now=lambda: 1700000000.0)
    assert delay_count(metrics) == 0
    # A clock behind Redis' never gives a negative delay.
    metrics.observe_delay("1700000001000-0", now=lambda: 1700000000.0)
    assert metrics.registry.get_sample_value("wsserver_event_delay_seconds_sum") == 0


def test_each_metrics_registry_is_its_own():
    from prometheus_client import REGISTRY

    Metrics()
    assert REGISTRY.get_sample_value("wsserver_event_delay_seconds_count") is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WS_PORT": "9001", "WS_METRICS_PORT": "9001"}, "include WS_PORT=9001"),
        (
            {"WS_PORT": "9001", "WS_METRICS_PORT": "9000", "WS_WORKERS": "2"},
            "ports 9000-9001",
        ),
        ({"WS_METRICS_PORT": "65535", "WS_WORKERS": "2"}, "past 65535"),
    ],
)
def test_metrics_ports_that_cannot_work_are_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"SECRET_KEY": "x", **env})
    load_config({"SECRET_KEY": "x", "WS_PORT": "9001", "WS_METRICS_PORT": "9002"})


# Real traffic


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = (
                sample.value
            )
    return samples


async def traffic(site: MainSite, sidecar: SidecarProcess):
    admin = await sidecar.connect(site.token("admin"))
    bob = await sidecar.connect(site.token("bob"))  # sees nothing
    refused = await sidecar.connect("not a token")
    assert await closed_with(refused) == (1011, "authentication failed")
    bus = redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"])
    channel = site.env["WSSERVER_CHANNEL"]
    for number in range(3):
        publish_like_the_publisher(bus, channel, {"content_type_id": 1, "n": number})
    # Published by other code, without an id: delivered, but its delay unknown.
    bus.publish(channel, json.dumps({"content_type_id": 1, "n": 3}))
    bus.publish(channel, b"not json")
    for _ in range(4):
        await receive_event(admin)
    await bob.close()

    def counted() -> bool:
        metrics = scrape(sidecar.metrics_url)
        return (
            metrics["wsserver_connections"] == 1
            and metrics["wsserver_bus_events_total{outcome=invalid}"] == 1
        )

    await eventually(counted, 5, "bob gone and the invalid message counted")
    return admin


async def test_metrics_after_real_traffic(site, tmp_path):
    sidecar = SidecarProcess.for_site(site, tmp_path).start()
    try:
        admin = await traffic(site, sidecar)
        metrics = scrape(sidecar.metrics_url)
        assert metrics["wsserver_connections"] == 1  # bob left
        assert metrics["wsserver_authentications_total{result=success}"] == 2
        assert metrics["wsserver_authentications_total{result=failure}"] == 1
        assert metrics["wsserver_bus_events_total{outcome=routed}"] == 4
        assert metrics["wsserver_bus_events_total{outcome=invalid}"] == 1
        assert metrics["wsserver_deliveries_total"] == 4
        assert metrics["wsserver_event_delay_seconds_count"] == 3
        assert 0 < metrics["wsserver_event_delay_seconds_sum"] < 3 * 5
        assert metrics["wsserver_slow_client_closes_total"] == 0
        assert metrics["wsserver_bus_subscribed"] == 1
        await admin.close()
    finally:
        assert sidecar.stop() == 0


async def test_metrics_on_a_port_of_their_own_and_json_logs(site, tmp_path):
    port = free_port()
    sidecar = SidecarProcess.for_site(
        site, tmp_path, WS_METRICS_PORT=str(port), WS_LOG_FORMAT="json"
    ).start()
    try:
        admin = await traffic(site, sidecar)
        metrics = scrape(f"http://127.0.0.1:{port}/metrics")
        assert metrics["wsserver_deliveries_total"] == 4
        # Never on the public WebSocket port.
        assert http_status(sidecar.http + "/metrics") != 200
        await admin.close()
    finally:
        assert sidecar.stop() == 0
    records = [json.loads(line) for line in sidecar.log().splitlines() if line]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    messages = [record["message"] for record in records]
    assert any(m.startswith("Configuration: ") for m in messages)
    assert any("opened for user" in m for m in messages)
    assert any("closed for user" in m and "1000" in m for m in messages)


def test_metrics_are_not_served_unless_asked_for_and_never_on_the_public_port(
    site, tmp_path
):
    sidecar = SidecarProcess.for_site(site, tmp_path, WS_METRICS_PORT="0").start()
    try:
        # 426 Upgrade Required: a plain GET is not a WebSocket handshake.
        assert http_status(sidecar.http + "/metrics") == 426
        assert "Metrics are off" in sidecar.log()
    finally:
        assert sidecar.stop() == 0


async def test_bus_reconnects_are_counted(site, tmp_path):
    bus = ThrowawayRedis().start()
    sidecar = SidecarProcess.for_site(site, tmp_path, REDIS_URL=bus.url).start()
    metrics_url = sidecar.metrics_url
    try:
        before = scrape(metrics_url)
        assert before["wsserver_bus_subscribed"] == 1
        assert before["wsserver_bus_reconnects_total"] == 0
        bus.kill()
        wait_for(
            lambda: scrape(metrics_url)["wsserver_bus_subscribed"] == 0, 10, "down"
        )
        bus = ThrowawayRedis(port=bus.port).start()
        wait_for(lambda: scrape(metrics_url)["wsserver_bus_subscribed"] == 1, 15, "up")
        assert scrape(metrics_url)["wsserver_bus_reconnects_total"] >= 1
    finally:
        assert sidecar.stop() == 0
        bus.kill()


async def test_each_worker_serves_its_own_metrics(site, tmp_path):
    sidecar = SidecarProcess.for_site(site, tmp_path, WS_WORKERS="2").start()
    port = int(sidecar.env["WS_METRICS_PORT"])
    try:
        await sidecar.wait_logged("Subscribed to channel", 2, 10)
        token = site.token("alice")
        clients = await asyncio.gather(
            *[authenticate(sidecar.url, token) for _ in range(12)]
        )
        await eventually(
            lambda: (
                sum(
                    scrape(f"http://127.0.0.1:{p}/metrics")["wsserver_connections"]
                    for p in (port, port + 1)
                )
                == 12
            ),
            10,
            "12 connections",
        )
        workers = [scrape(f"http://127.0.0.1:{p}/metrics") for p in (port, port + 1)]
        assert sum(w["wsserver_connections"] for w in workers) == 12
        assert [w["wsserver_bus_subscribed"] for w in workers] == [1, 1]
        for websocket in clients:
            await websocket.close()
    finally:
        assert sidecar.stop() == 0
    assert f":{port}/metrics" in sidecar.log()
    assert f":{port + 1}/metrics" in sidecar.log()
