"""wsserver.js's resume position, run by Node.js: an id, or on a Redis
Cluster the cursor of every partition's last id (see wsserver.cursors)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from processes import ROOT

from wsserver.cursors import parse_cursor

SCRIPT = ROOT / "wsserver" / "publisher" / "static" / "wsserver" / "wsserver.js"


def next_positions(ids: list[str], start: str | None = None) -> list[str]:
    """The positions wsserver.js keeps after each of these ids."""
    node = shutil.which("node")
    assert node, "Node.js is needed to run wsserver.js"
    code = (
        f"import {{ nextPosition }} from {json.dumps(SCRIPT.as_uri())};\n"
        f"let position = {json.dumps(start)};\n"
        "const positions = [];\n"
        f"for (const id of {json.dumps(ids)}) {{\n"
        "  position = nextPosition(position, id);\n"
        "  positions.push(position);\n"
        "}\n"
        "console.log(JSON.stringify(positions));\n"
    )
    result = subprocess.run(
        [node, "--input-type=module", "-e", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(result.stdout)


def test_one_redis_keeps_the_last_id():
    assert next_positions(["1-0", "2-0", "2-1"]) == ["1-0", "2-0", "2-1"]


def test_a_cluster_keeps_each_partitions_last_id():
    positions = next_positions(["3:1-0", "17:2-0", "3:5-0", "170:6-0", "17:7-0"])
    assert positions == [
        "3:1-0",
        "3:1-0,17:2-0",
        "17:2-0,3:5-0",
        "17:2-0,3:5-0,170:6-0",
        "3:5-0,170:6-0,17:7-0",
    ]
    # What the sidecar reads: one position per partition.
    assert parse_cursor(positions[-1]) == {3: (5, 0), 170: (6, 0), 17: (7, 0)}


def test_a_partitions_prefix_is_not_confused_with_a_longer_one():
    # "1:" must not replace "17:" (nor "17:" replace "1:").
    assert next_positions(["17:1-0", "1:2-0", "17:3-0"])[-1] == "1:2-0,17:3-0"


@pytest.mark.parametrize("start", ["9-9", None])
def test_a_cluster_id_after_a_plain_one_starts_a_cursor(start):
    # An id of one Redis (before a move to a cluster) is no partition's.
    assert next_positions(["4:1-0"], start) == ["4:1-0"]
