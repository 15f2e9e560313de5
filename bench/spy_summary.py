"""Where a py-spy recording of wsserver spent its time, by category.

``python bench/spy_summary.py FILE [RATE]``: FILE from ``python -m bench
--py-spy DIR`` (raw, collapsed stacks: ``frame;frame;... count``), RATE the
samples per second it was recorded at (200). Each stack is counted once, in
the first category that matches it; the shares are of the samples, to be
applied to the CPU time the benchmark measured (py-spy, not stopping the
process, also counts some time spent in system calls that return at once).
"""

from __future__ import annotations

import sys
from collections import Counter

CATEGORIES = [
    ("keepalive: ping round", ("Keepalive.ping_round",)),
    ("keepalive: pong check", ("Keepalive.check_pongs",)),
    ("pongs (and anything else) received", ("data_received",)),
    ("fan-out: writes", ("wsserver/fanout.py",)),
    ("Redis: events and control messages", ("wsserver/bus.py", "redis/")),
    ("periodic rechecks", ("recheck",)),
    ("metrics scrapes", ("wsserver/metrics.py", "_metrics_endpoint")),
    ("garbage collector", ("wsserver/collector.py",)),
    ("event loop: select, timers, callbacks", ("_run_once",)),
]


def summary(path: str, rate: int = 200) -> str:
    by_category: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            total += samples
            for name, keys in CATEGORIES:
                if any(key in stack for key in keys):
                    by_category[name] += samples
                    break
            else:
                by_category["other"] += samples
            by_leaf[stack.rsplit(";", 1)[-1]] += samples
    total = max(total, 1)
    out = [f"{path}: {total} samples ({total / rate:.2f} s at {rate} Hz)"]
    for name, samples in by_category.most_common():
        out.append(f"  {samples / total:6.1%}  {name}")
    out.append("  busiest frames:")
    for leaf, samples in by_leaf.most_common(12):
        out.append(f"  {samples / total:6.1%}  {leaf}")
    return "\n".join(out)


if __name__ == "__main__":
    print(summary(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200))
