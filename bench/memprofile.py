"""Run the operator; the first SIGUSR1 starts tracemalloc, the next ones write the largest
allocation sites since then to a file (what is allocated after start-up, and still held).

    python bench/memprofile.py OUTPUT run [operator flags...]
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from pathlib import Path

from instance_profile_operator import cli

FRAMES = 8


def dump(output: Path) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    lines = [f"traced: {sum(s.size for s in snapshot.statistics('filename')) / 2**20:.1f} MiB"]
    for kind in ("filename", "lineno"):
        lines.append(f"-- by {kind}")
        lines += [str(stat) for stat in snapshot.statistics(kind)[:40]]
    lines.append("-- by traceback (top 15)")
    for stat in snapshot.statistics("traceback")[:15]:
        lines.append(f"{stat.size / 2**20:.2f} MiB in {stat.count} blocks")
        lines += ["    " + line for line in stat.traceback.format()[-FRAMES:]]
    output.write_text("\n".join(lines) + "\n")


def main() -> int:
    output = Path(sys.argv[1])
    signal.signal(signal.SIGUSR1, lambda *_: dump(output) if tracemalloc.is_tracing() else tracemalloc.start(FRAMES))
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
