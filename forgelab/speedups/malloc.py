"""glibc's malloc, told not to keep the memory that big messages leave behind.

Replaces glibc's sliding mmap threshold with a fixed 128 KB (``mallopt``), for ``serve`` and its
workers (``install(process=True)``). Why: over the bench's 100 KB rows the two processes grew
from 107 to 145 MB and stayed there; with the threshold fixed, 76 to 101 MB (docs/performance.md,
"Fifth round"). Unnecessary with an allocator that returns freed memory on its own.
"""
from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # mallopt()'s parameter number (glibc malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept from here on


def keep_heap_small() -> bool:
    """Fix glibc's mmap threshold at 128 KB, as ``serve`` does for each of its processes.

    glibc starts at 128 KB, then raises the threshold to the size of the biggest mmapped
    block freed so far. After that, blocks of a 100 KB message come from the heap, and
    the heap cannot give back a hole between blocks that are still in use: the bench's
    two processes grew from 107 to 145 MB over its 100 KB rows and stayed there; with the
    threshold fixed, 76 to 101 MB (docs/performance.md). True if glibc took the setting.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False
