"""What the C allocator keeps of the operator's memory, on glibc.

Python keeps small objects in arenas of its own and leaves larger blocks (watch events' JSON,
the tables of dicts that hold thousands of bindings, HTTP buffers) to glibc's malloc, which
keeps what a burst freed unless told otherwise:

* each thread that allocates may get a malloc arena of its own, up to eight per core; the EC2
  and Kubernetes thread pools spread their short-lived buffers over many, each holding on to
  its free memory. ``limit_arenas`` allows two, as ``MALLOC_ARENA_MAX=2`` would (an explicit
  ``MALLOC_ARENA_MAX`` wins);
* free memory goes back to the system only from the top of the heap. ``release_free`` returns
  every free page (``malloc_trim``); the controller calls it once per resync interval.

With another C library both do nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()


def limit_arenas() -> None:
    """Cap malloc arenas at ``ARENAS``; call before any thread starts."""
    if _LIBC is not None and "MALLOC_ARENA_MAX" not in os.environ and not _LIBC.mallopt(M_ARENA_MAX, ARENAS):
        log.warning("could not limit malloc arenas")


def release_free() -> None:
    """Return the C heap's free pages to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
