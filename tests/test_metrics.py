"""Metrics scraped after real traffic, and logs as JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request

import pytest
import redis
from clients import (
    authenticate,
    closed_with,
    publish_like_the_publisher,
    receive_event,
)
from processes import PASSWORD, MainSite, Sidecar, free_port
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(redis_url, tmp_path_factory):
    database = tmp_path_factory.mktemp("metrics") / "site.sqlite3"
    main_site = MainSite(f"sqlite:///{database}", redis_url, f"metrics-{os.getpid()}")
    main_site.manage("migrate", "--noinput")
    main_site.manage("seed_demo", "--password", PASSWORD)
    return main_site


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


async def traffic(site: MainSite, sidecar: Sidecar) -> None:
    admin = await authenticate(sidecar.url, site.token("admin"))
    bob = await authenticate(sidecar.url, site.token("bob"))  # sees nothing
    refused = await authenticate(sidecar.url, "not a token")
    assert await closed_with(refused) == (1011, "authentication failed")
    await asyncio.sleep(0.2)
    bus = redis.Redis.from_url(site.env["WSSERVER_REDIS_URL"])
    channel = site.env["WSSERVER_CHANNEL"]
    for number in range(3):
        publish_like_the_publisher(bus, channel, {"content_type_id": 1, "n": number})
    bus.publish(channel, b"not json")
    for _ in range(3):
        await receive_event(admin)
    await bob.close()
    await asyncio.sleep(0.2)
    return admin


async def test_metrics_after_real_traffic(site, tmp_path):
    sidecar = Sidecar.for_site(site, tmp_path).start()
    try:
        admin = await traffic(site, sidecar)
        metrics = scrape(sidecar.http + "/metrics")
        assert metrics["wsserver_connections"] == 1  # bob left
        assert metrics["wsserver_authentications_total{result=success}"] == 2
        assert metrics["wsserver_authentications_total{result=failure}"] == 1
        assert metrics["wsserver_bus_events_total{outcome=routed}"] == 3
        assert metrics["wsserver_bus_events_total{outcome=invalid}"] == 1
        assert metrics["wsserver_deliveries_total"] == 3
        assert metrics["wsserver_event_delay_seconds_count"] == 3
        assert metrics["wsserver_slow_client_closes_total"] == 0
        assert metrics["wsserver_bus_subscribed"] == 1
        await admin.close()
    finally:
        assert sidecar.stop() == 0


async def test_metrics_on_a_port_of_their_own_and_json_logs(site, tmp_path):
    port = free_port()
    sidecar = Sidecar.for_site(
        site, tmp_path, WS_METRICS_PORT=str(port), WS_LOG_FORMAT="json"
    ).start()
    try:
        admin = await traffic(site, sidecar)
        metrics = scrape(f"http://127.0.0.1:{port}/metrics")
        assert metrics["wsserver_deliveries_total"] == 3
        with pytest.raises(urllib.error.URLError):  # not on the WebSocket port
            urllib.request.urlopen(sidecar.http + "/metrics")
        await admin.close()
    finally:
        assert sidecar.stop() == 0
    records = [json.loads(line) for line in sidecar.log().splitlines() if line]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    messages = [record["message"] for record in records]
    assert any(m.startswith("Configuration: ") for m in messages)
    assert any("opened for user" in m for m in messages)
    assert any("closed for user" in m and "1000" in m for m in messages)
