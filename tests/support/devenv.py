"""Drive ``python -m instance_profile_operator.devenv`` as a user does."""

from __future__ import annotations

import subprocess
import sys


def devenv_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instance_profile_operator.devenv", *args],
                          capture_output=True, text=True, timeout=timeout)
