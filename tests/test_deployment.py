"""docs/deployment.md's nginx configuration, run with a real nginx.

The server block is read from the document (so the documentation is what is
tested), with only its ports changed and TLS left out: two sidecar processes
behind ``least_conn``, WebSocket upgrades proxied both ways, the health and
metrics endpoints kept private, and a sidecar's 1012 on shutdown passed
through to its clients.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess

import pytest
from clients import authenticate, closed_with
from clients import receive_event as receive
from processes import ROOT, SidecarProcess, free_port, http_status
from waiting import eventually, units, wait_for

pytestmark = pytest.mark.e2e


def documented_nginx_config(upstreams: list[int], port: int) -> str:
    """The nginx block of docs/deployment.md, on these ports, without TLS."""
    document = (ROOT / "docs" / "deployment.md").read_text()
    config = document.split("```nginx", 1)[1].split("```", 1)[0]
    servers = re.findall(r"^\s*server 127\.0\.0\.1:\d+;$", config, re.MULTILINE)
    assert len(servers) == len(upstreams), servers
    for line, upstream in zip(servers, upstreams, strict=True):
        config = config.replace(line, f"    server 127.0.0.1:{upstream};", 1)
    assert "listen 443 ssl;" in config
    return config.replace("listen 443 ssl;", f"listen 127.0.0.1:{port};")


@pytest.fixture
def nginx(tmp_path):
    """Start nginx with a given http-level configuration; stop it afterwards."""
    executable = shutil.which("nginx") or "/usr/sbin/nginx"
    processes = []

    def start(http_config: str, port: int) -> None:
        for directory in ["logs", "temp"]:
            (tmp_path / directory).mkdir(exist_ok=True)
        (tmp_path / "nginx.conf").write_text(
            f"pid {tmp_path}/nginx.pid;\n"
            "error_log stderr warn;\n"
            "worker_processes 1;\n"
            "events {}\n"
            "http {\n"
            "    access_log off;\n"
            f"    client_body_temp_path {tmp_path}/temp/body;\n"
            f"    proxy_temp_path {tmp_path}/temp/proxy;\n"
            f"    fastcgi_temp_path {tmp_path}/temp/fastcgi;\n"
            f"    uwsgi_temp_path {tmp_path}/temp/uwsgi;\n"
            f"    scgi_temp_path {tmp_path}/temp/scgi;\n"
            f"{http_config}\n"
            "}\n"
        )
        log = tmp_path / "logs" / "nginx.log"
        with open(log, "w") as stderr:
            command = [executable, "-p", tmp_path, "-c", tmp_path / "nginx.conf"]
            process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=stderr)
        processes.append(process)
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{port}/") is not None,
            10,
            f"nginx ({log.read_text() if log.exists() else ''})",
            process,
        )

    yield start
    for process in processes:
        process.terminate()
        process.wait(units(10))


async def close_or_none(websocket) -> tuple[int, str] | None:
    try:
        return await closed_with(websocket, timeout=2)
    except TimeoutError:
        return None


async def test_the_documented_nginx_configuration(site, nginx, tmp_path, publish):
    sidecars = [
        SidecarProcess.for_site(site, tmp_path, WS_TRUSTED_PROXIES="127.0.0.1").start()
        for _ in range(2)
    ]
    try:
        port = free_port()
        nginx(documented_nginx_config([s.port for s in sidecars], port), port)
        url = f"ws://127.0.0.1:{port}/"

        # least_conn spreads the connections over both processes.
        token = site.token("admin")
        clients = [await authenticate(url, token) for _ in range(20)]
        await eventually(
            lambda: sum(sidecar.connections() for sidecar in sidecars) == 20,
            10,
            "20 connections",
        )
        counts = [sidecar.connections() for sidecar in sidecars]
        assert sum(counts) == 20 and min(counts) >= 5, counts

        # Events flow through the proxy to every client.
        publish({"content_type_id": 1, "n": 1})
        for websocket in clients:
            assert (await receive(websocket))["n"] == 1

        # Health checks and metrics are not public (allowed from 10.0.0.0/8).
        for path in ["/metrics", "/healthz", "/readyz"]:
            assert http_status(f"http://127.0.0.1:{port}{path}") == 403

        # A sidecar that shuts down: its clients get 1012 through nginx (the
        # others stay open), and reconnect to the other process.
        sidecars[0].process.send_signal(signal.SIGTERM)
        closes = await asyncio.gather(*[close_or_none(ws) for ws in clients])
        assert sidecars[0].stop() == 0
        assert "did not close in time" not in sidecars[0].log()
        assert closes.count((1012, "server restarting")) == counts[0], closes
        assert closes.count(None) == counts[1], closes
        again = [await authenticate(url, token) for _ in range(3)]
        # Authenticated before the event is published.
        await sidecars[1].until_connections(counts[1] + 3)
        publish({"content_type_id": 1, "n": 2})
        for websocket in again:
            assert (await receive(websocket))["n"] == 2
        for websocket in [*clients, *again]:
            await websocket.close()
    finally:
        for sidecar in sidecars:
            sidecar.stop()
