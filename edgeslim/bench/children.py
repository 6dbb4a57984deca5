"""Processes a bench starts that end with it: its measuring processes, and the trtexec they start
(a review: a bench stopped by SIGTERM or killed outright left trtexec building and timing, holding the
GPU, with its temporary folder)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from edgeslim.utils.processes import PR_SET_PDEATHSIG, dies_with_us, prctl


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """Have the kernel send this process ``sig`` when its parent (pid ``parent``) ends, on Linux
    (``PR_SET_PDEATHSIG``); end at once where the parent ended before the call."""
    call = prctl()
    if call is None:
        return
    call(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:
        os._exit(1)


def run_child(
    cmd: Sequence[str],
    *,
    timeout: float | None = None,
    own_group: bool = False,
    grace_s: float = 5.0,
    stamped: list[tuple[float, str]] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)`` whose child is stopped
    whatever ends the wait (a timeout, Ctrl-C, SIGTERM): SIGTERM, then SIGKILL after ``grace_s``, where
    subprocess.run sent SIGKILL at once (a measuring process had no time to stop its own child). With
    ``own_group`` the child gets a session of its own (no terminal's Ctrl-C; the stop reaches whatever
    it started too) and, on Linux, SIGKILL from the kernel if this process dies first. ``stamped``
    gets each line of the child's stdout as it comes, with its ``time.monotonic()``. Output that is not
    UTF-8 (a file name trtexec echoes) is decoded with U+FFFD in place of the bad bytes (a review: one
    such byte ended the reader, and the child blocked on a full pipe)."""
    preexec = dies_with_us() if own_group else None
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=own_group,
        preexec_fn=preexec,
    ) as proc:
        try:
            out, err = (
                proc.communicate(timeout=timeout) if stamped is None else _stamped(proc, stamped, timeout)
            )
        except BaseException:
            _stop(proc, own_group, grace_s)
            raise
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def _stamped(
    proc: subprocess.Popen, stamped: list[tuple[float, str]], timeout: float | None
) -> tuple[str, str]:
    """:meth:`~subprocess.Popen.communicate`, stdout read line by line, each stamped as it comes. A
    reader that fails still drains its pipe to the end (the child never blocks on a full pipe), and its
    error is raised once the child has ended."""
    err: list[str] = []
    failed: list[BaseException] = []

    def reading(stream: Any, read: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                read()
            except Exception as e:  # (kept for the caller; the pipe is still drained below)
                failed.append(e)
                with contextlib.suppress(Exception):
                    while stream.buffer.read(65536):
                        pass

        return run

    def read_out() -> None:
        for line in proc.stdout:
            stamped.append((time.monotonic(), line))

    readers = [threading.Thread(target=reading(proc.stdout, read_out), daemon=True),
               threading.Thread(target=reading(proc.stderr, lambda: err.append(proc.stderr.read())),
                                daemon=True)]  # fmt: skip
    for t in readers:
        t.start()
    proc.wait(timeout=timeout)
    for t in readers:
        t.join()
    if failed:
        raise failed[0]
    return "".join(line for _, line in stamped), "".join(err)


def _stop(proc: subprocess.Popen, group: bool, grace_s: float) -> None:
    """End ``proc`` (with ``group``: its process group): SIGTERM, SIGKILL what is left after ``grace_s``;
    a stop signal raised in between still ends the group by SIGKILL (a review: the bench's SIGTERM right
    after a terminal's Ctrl-C raised before the first send's try, and neither signal reached the group)."""

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    try:
        send(signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    finally:  # (the group: what the child started, also where the child itself has ended)
        if group or proc.poll() is None:
            send(signal.SIGKILL)
        proc.wait()


class _SigTerm(BaseException):
    """SIGTERM, raised in a process it would have ended at once."""


@contextlib.contextmanager
def cleaned_up_on_sigterm() -> Iterator[None]:
    """In a process that SIGTERM ends at once (its default action: a measuring process), SIGTERM in the
    block raises, so that the block's clean-up runs (its children stopped, its temporary folders
    removed); the process then ends of SIGTERM, as it would have. Elsewhere (the CLI's own handler, not
    the main thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    raised: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not raised:  # (once: a second one does not cut the clean-up of the first short)
            raised.append(signum)
            raise _SigTerm

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if raised:  # the block cleaned up: the process ends of SIGTERM, as it would have
            os.kill(os.getpid(), signal.SIGTERM)
