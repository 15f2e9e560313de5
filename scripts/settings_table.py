"""Print the README's configuration table from wsserver.config.SETTINGS.

``python scripts/settings_table.py --write`` rewrites the table in README.md
between its markers; tests/test_docs.py fails when the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsserver.config import SETTINGS  # noqa: E402

BEGIN = "<!-- settings-table: begin (scripts/settings_table.py --write) -->"
END = "<!-- settings-table: end -->"


def table() -> str:
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    group = None
    for setting in SETTINGS:
        if setting.group != group:
            group = setting.group
            lines.append(f"| **{group}** | | |")
        default = "*(required)*" if setting.default is None else f"`{setting.default}`"
        if setting.default == "":
            default = "*(empty)*"
        meaning = setting.help.replace("|", "\\|")
        lines.append(f"| `{setting.name}` | {default} | {meaning} |")
    return "\n".join(lines)


def block() -> str:
    return f"{BEGIN}\n{table()}\n{END}"


def write(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:start] + block() + text[end:])


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        print(block())
