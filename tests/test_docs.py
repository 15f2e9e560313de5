"""The README stays true to the code: settings table, close codes, commands."""

from __future__ import annotations

import re
import subprocess
import sys

from processes import ROOT

from wsserver import closes as close_codes
from wsserver.config import SETTINGS

README = (ROOT / "README.md").read_text()


def test_the_settings_table_is_generated_from_the_code():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() in README, (
        "README.md's settings table is stale: "
        "run `python scripts/settings_table.py --write`"
    )


def test_help_lists_every_setting():
    result = subprocess.run(
        [sys.executable, "-m", "wsserver", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    for setting in SETTINGS:
        assert setting.name in result.stdout


def test_every_close_code_is_documented():
    closes = [
        value
        for value in vars(close_codes).values()
        if isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[1], str)
        and isinstance(value[0], int)
    ]
    assert len(closes) >= 6
    for code, reason in closes:
        assert re.search(rf"\| {int(code)} \| `{re.escape(reason)}` \|", README), (
            code,
            reason,
        )


def test_the_readme_has_exactly_two_set_up_commands():
    block = README.split("## Set-up", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci
