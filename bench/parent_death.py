"""A process that must not outlive its parent asks the kernel to kill it when the parent dies (Linux's
PR_SET_PDEATHSIG), kill -9 included: the fork server of the process executor, and every cell process."""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """On Linux, SIGKILL this process the moment its parent dies; if the parent died already, exit now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
