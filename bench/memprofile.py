"""Run the operator under tracemalloc; on SIGUSR1, write the largest allocation sites to a file.

    python bench/memprofile.py OUTPUT run [operator flags...]
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from pathlib import Path

from instance_profile_operator import cli

FRAMES = 12


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
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, lambda *_: dump(output))
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
