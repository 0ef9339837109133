"""Tune glibc malloc (and OpenMP's waiting) for PyTorch on small CPUs (see the project's field notes).

With glibc's defaults, up to half of a CPU fit's time goes to page faults from large tensors being
returned to the kernel and fetched again. Keeping freed memory in the process gives 2-3x on a
2-core machine. Setting MALLOC_TOP_PAD_ & co. before Python starts is best (`.ci/run` and the
Space do that); `tune_malloc()` is the in-process fallback for `python -m ...` and `python app.py`,
and must run before torch is imported.

OpenMP's threads spin while they wait for each other; when other processes share the cores (a
Space, CI, a shared machine) a spinning thread holds a core the one it waits for needs. Measured on
a 2-core machine under load: a 64 px feature pass over 1,797 images 17-32 s spinning, 4.5 s with
OMP_WAIT_POLICY=PASSIVE; a linear head's 100 epochs 35-44 s against 0.9 s. `tune_malloc()` sets
PASSIVE too, unless the environment says otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

SETTINGS = {
    "MALLOC_TOP_PAD_": 1 << 30,  # keep 1 GiB of headroom at the top of the heap
    "MALLOC_TRIM_THRESHOLD_": (1 << 31) - 1,  # (mallopt takes an int) practically never trim
    "MALLOC_MMAP_THRESHOLD_": 32 << 20,  # serve blocks up to 32 MiB from the heap, not mmap
}


def tune_malloc() -> bool:
    """Apply the settings through `mallopt` unless the environment already did. True if applied."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: before the import
    if not sys.platform.startswith("linux") or "MALLOC_TOP_PAD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, SETTINGS["MALLOC_MMAP_THRESHOLD_"])
    ok &= mallopt(_M_TOP_PAD, SETTINGS["MALLOC_TOP_PAD_"])
    ok &= mallopt(_M_TRIM_THRESHOLD, SETTINGS["MALLOC_TRIM_THRESHOLD_"])
    return bool(ok)
