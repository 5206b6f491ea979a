"""Run untrusted (model-generated) Python in a restricted subprocess.

What is enforced for every run:
- a separate process, ``python -I`` (isolated: no user site, PYTHON* env vars ignored), in a fresh
  temporary directory as cwd (removed afterwards), stdin closed, a minimal environment
  (PATH, LANG, HOME = the temp dir, OMP_NUM_THREADS=1);
- wall-clock time limit: the whole process group is killed (SIGKILL) when it expires; plus
  RLIMIT_CPU as a second line;
- memory limit: RLIMIT_AS (address space) set in ``preexec_fn``; allocation beyond it raises
  MemoryError in the child; also RLIMIT_FSIZE (written file size) and RLIMIT_CORE = 0;
- no network: the child runs in a fresh network namespace (``unshare -n``, or ``unshare -rn`` when
  not root) whenever that works on this machine; in every case a prelude replaces the ``socket``
  module's constructors and resolvers with functions raising ``OSError`` (weaker: code can still
  reach the OS through ctypes, so rely on the namespace where security matters).
Not enforced: filesystem read access outside the temp dir, process count.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

_OUTPUT_LIMIT = 8192

NETWORK_PRELUDE = """\
import socket as _rac_socket
def _rac_blocked(*args, **kwargs):
    raise OSError("network access is disabled in the rac sandbox")
class _RacBlockedSocket:
    def __init__(self, *args, **kwargs):
        _rac_blocked()
for _name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
              "create_server", "socketpair", "fromfd"):
    setattr(_rac_socket, _name, _rac_blocked)
_rac_socket.socket = _RacBlockedSocket
del _name
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_file_mb: int = 64


@dataclass(frozen=True)
class SandboxResult:
    """Outcome: status is "ok" (exit 0), "error" (nonzero exit), "timeout" or "memory"."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@functools.lru_cache(maxsize=1)
def network_namespace_command() -> tuple[str, ...]:
    """The command prefix that gives the child its own (empty) network namespace; () if none works."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for flags in (("-n",), ("-rn",)):
        try:
            done = subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return (exe, *flags)
    return ()


def isolation_summary() -> dict:
    """What this machine enforces (recorded in the code task's metrics)."""
    prefix = network_namespace_command()
    return {
        "network": "namespace (" + " ".join(prefix[1:]) + ") + socket prelude" if prefix else "socket prelude",
        "memory": "RLIMIT_AS",
        "time": "wall clock kill + RLIMIT_CPU",
    }


def _limiter(limits: SandboxLimits):
    def apply() -> None:
        import resource

        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        cpu = int(limits.timeout_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        size = limits.max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _clip(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= _OUTPUT_LIMIT else text[:_OUTPUT_LIMIT // 2] + "\n...\n" + text[-_OUTPUT_LIMIT // 2:]


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Execute ``code`` as a script in the sandbox and report how it ended."""
    limits = limits or SandboxLimits()
    workdir = tempfile.mkdtemp(prefix="rac-sandbox-")
    try:
        script = os.path.join(workdir, "main.py")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(NETWORK_PRELUDE + "\n" + code)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "OMP_NUM_THREADS": "1",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [*network_namespace_command(), sys.executable, "-I", script]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=_limiter(limits))  # noqa: PLW1509 - rlimits must apply before exec
        try:
            out, err = proc.communicate(timeout=limits.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            timed_out = True
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stderr = _clip(err)
    if timed_out or proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        status = "timeout"
    elif proc.returncode == 0:
        status = "ok"
    elif "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        status = "memory"
    else:
        status = "error"
    return SandboxResult(status, proc.returncode, _clip(out), stderr, round(seconds, 3))
