"""The allocator policy, observed on glibc itself: arenas capped, free pages returned."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from instance_profile_operator.runtime import memory

pytestmark = pytest.mark.skipif(memory._LIBC is None, reason="glibc only")

COUNT_ARENAS = textwrap.dedent("""
    import ctypes, sys, tempfile, threading
    from instance_profile_operator.runtime import memory
    if sys.argv[1] == "limit":
        memory.limit_arenas()
    barrier = threading.Barrier(8)
    def allocate():
        barrier.wait()  # all at once: each thread contends for an arena
        blocks = [bytearray(2048) for _ in range(2000)]
        barrier.wait()
    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    with tempfile.NamedTemporaryFile() as report:
        stream = libc.fopen(report.name.encode(), b"w")
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
        print(open(report.name).read().count("<heap nr="))
""")


def arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    return int(subprocess.run([sys.executable, "-c", COUNT_ARENAS, mode], env=env, check=True,
                              capture_output=True, text=True).stdout)


def test_limit_arenas_caps_the_arenas_threads_get():
    assert arenas("default") > memory.ARENAS  # the test can tell
    assert arenas("limit") <= memory.ARENAS


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def test_release_free_returns_free_pages_to_the_system():
    blocks = [bytearray(4096) for _ in range(20000)]  # 80 MiB below malloc's mmap threshold: the heap
    pinned = bytearray(4096)  # above them: the heap's top stays in use
    del blocks
    before = rss_mib()
    memory.release_free()
    assert before - rss_mib() > 40
    del pinned
