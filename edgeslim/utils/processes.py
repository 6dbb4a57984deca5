"""Child processes that end with the process that started them (Linux: ``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

#: prctl(2)'s option: the signal the kernel sends a process when the thread that started it ends
PR_SET_PDEATHSIG = 1


def prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def dies_with_us(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that has the kernel send the child ``sig`` when this
    process ends (also on ``kill -9``), on Linux; the child ends at once where this process ended before
    the call. None where the kernel cannot (the child then outlives a killed parent, as before)."""
    call = prctl()  # (looked up before the fork: the child only calls it)
    if call is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        call(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
