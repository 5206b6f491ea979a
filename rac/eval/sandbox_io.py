"""Feed a sandboxed process its script and collect its output into capped buffers, within a deadline.

Output is never held whole: each stream keeps its first and last ``cap // 2`` bytes (and a count),
so 300 MiB on stdout costs a few KiB of rac's memory. The deadline covers the whole run; once the
main process has exited, output still arriving is read for at most ``GRACE_S`` (a detached
descendant holding the pipe cannot keep the run open).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field

GRACE_S = 0.2
_CHUNK = 1 << 16


@dataclass
class CappedBuffer:
    """The head and tail of a byte stream, at most ``cap`` bytes in all."""

    cap: int
    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    total: int = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data[-(self.cap - self.cap // 2):]
            excess = len(self.tail) - (self.cap - self.cap // 2)
            if excess > 0:
                del self.tail[:excess]

    def text(self) -> str:
        """Decoded content; a marker stands where bytes were dropped."""
        head = self.head.decode("utf-8", errors="replace")
        if self.total <= len(self.head) + len(self.tail):
            return head + self.tail.decode("utf-8", errors="replace")
        dropped = self.total - len(self.head) - len(self.tail)
        return f"{head}\n... [{dropped} bytes dropped] ...\n{self.tail.decode('utf-8', errors='replace')}"


@dataclass
class Collected:
    """What a run produced: capped stdout/stderr, whether the deadline killed it, its wall time."""

    stdout: CappedBuffer
    stderr: CappedBuffer
    timed_out: bool
    seconds: float


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group led by ``proc`` (started with ``start_new_session=True``)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def collect(proc: subprocess.Popen, stdin_data: bytes, timeout_s: float, cap: int) -> Collected:
    """Write ``stdin_data`` then close stdin, read both streams until EOF, exit or the deadline."""
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None, "collect needs PIPEs"
    stdin = proc.stdin
    start = time.monotonic()
    deadline = start + timeout_s
    buffers = {proc.stdout.fileno(): CappedBuffer(cap), proc.stderr.fileno(): CappedBuffer(cap)}
    pending = memoryview(stdin_data)
    sel = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd = stdin.fileno()
    if pending:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        stdin.close()
    timed_out = exited = False
    try:
        while True:
            if not exited and proc.poll() is not None:
                exited = True
                deadline = min(deadline, time.monotonic() + GRACE_S)
            reading = any(fd in sel.get_map() for fd in buffers)
            if exited and not reading:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = not exited
                break
            if not reading:  # the code closed its output but still runs
                try:
                    proc.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    pass
                continue
            for key, _ in sel.select(timeout=min(remaining, 0.05)):
                if key.fd == stdin_fd:
                    try:
                        pending = pending[os.write(stdin_fd, pending[:_CHUNK]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(stdin_fd)
                        stdin.close()
                    continue
                try:
                    data = os.read(key.fd, _CHUNK)
                except BlockingIOError:
                    continue
                if data:
                    buffers[key.fd].write(data)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
        kill_group(proc)
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream and not stream.closed:
                stream.close()
    out, err = buffers.values()
    return Collected(out, err, timed_out, time.monotonic() - start)
