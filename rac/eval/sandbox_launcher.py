"""The trusted first program inside the sandbox: finish isolation, then run the untrusted script.

It runs as ``python -I -c <this file's source> <json spec>`` inside the namespaces that bwrap or
``unshare`` created (stdlib only: rac itself is not visible in the sandbox), with the script on
stdin. In order it: (0) as PID 1 (``unshare``), forks and stays behind as the reaper; (1) reads the
script; for ``unshare``, builds the read-only root itself (a tmpfs with read-only nosuid binds of
the system and interpreter folders, fresh /proc, a few /dev nodes, private tmpfs /tmp and work dir)
and chroots into it; (2) writes the script into the work dir, puts /dev/null on stdin; (3) sets
no_new_privs and, holding the capability to (root on the host), drops to the per-run uid/gid (then
RLIMIT_NPROC counts only this run's processes and no root-owned file is the code's own); (4) sets
the rlimits (address space, CPU, file size, processes, core, open files); (5) closes every
inherited descriptor above stderr; (6) runs the script as ``__main__``.
Exit status ``MEMORY_EXIT`` means the script ran out of memory (MemoryError escaped it): the
verdict comes from this status, never from stderr text.
"""

from __future__ import annotations

import json
import os
import resource
import sys

MEMORY_EXIT = 86

_PR_SET_NO_NEW_PRIVS = 38
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target}: {os.strerror(err)}")


def build_root(spec: dict) -> None:
    """``unshare`` backend: a read-only tmpfs root with the listed binds, then chroot into it."""
    root = spec["newroot"]
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
    for kind, src, dest in spec["layout"]:
        path = root + dest
        if kind == "symlink":
            os.symlink(src, path)
            continue
        is_dir = kind in ("tmpfs", "proc") or os.path.isdir(src)
        os.makedirs(path if is_dir else os.path.dirname(path), mode=0o755, exist_ok=True)
        if not is_dir:
            open(path, "a").close()
        if kind == "tmpfs":
            _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=1777,size={spec['tmpfs_bytes']}")
        elif kind == "proc":
            _mount("proc", path, "proc", _MS_NOSUID | _MS_NODEV)
        else:
            _mount(src, path, None, _MS_BIND | _MS_REC)
            _mount(None, path, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID)
    _mount(None, root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "mode=0755")
    os.chroot(root)


def write_script(spec: dict, code: bytes) -> None:
    """The script into the (tmpfs) work dir; work dir and /tmp writable by the sandbox user."""
    for path in spec.get("writable", ()):
        os.chmod(path, 0o1777)
    with open(spec["script"], "wb") as handle:
        handle.write(code)
    os.chmod(spec["script"], 0o644)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def drop_privileges(uid: int | None, gid: int | None) -> None:
    """No new privileges (setuid binaries do not elevate); become the sandbox user, no supplementary groups.

    Capabilities go with uid 0."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SystemExit("rac sandbox: could not set no_new_privs")
    if uid is None or os.getuid() != 0:
        return
    os.setgroups([])
    os.setgid(gid if gid is not None else uid)
    os.setuid(uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("rac sandbox: could not drop root")


def set_limits(limits: dict) -> None:
    """Apply the rlimits; a limit can only be lowered, so the script cannot raise it again."""
    for name, value in limits.items():
        soft, hard = (value, value) if isinstance(value, int) else value
        resource.setrlimit(getattr(resource, name), (soft, hard))


def reap_as_init() -> None:
    """As PID 1 (``unshare --pid --fork``) fork the real run and stay a reaper: the kernel ignores signals
    that PID 1 sends itself (SIGSEGV, SIGXCPU would not kill the script). Exit as bwrap does:
    the child's status, or 128 + the signal that killed it."""
    child = os.fork()
    if child == 0:
        return
    os.closerange(0, 1 << 16)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def main(spec: dict) -> None:
    import runpy

    if os.getpid() == 1:
        reap_as_init()

    code = sys.stdin.buffer.read()
    if spec.get("newroot"):
        build_root(spec)
    write_script(spec, code)
    os.chdir(spec["workdir"])
    os.environ.pop("PWD", None)
    drop_privileges(spec.get("uid"), spec.get("gid"))
    set_limits(spec["limits"])
    os.closerange(3, 1 << 16)
    del code
    sys.argv = [spec["script"]]
    sys.path[0:0] = [spec["workdir"]]
    try:
        runpy.run_path(spec["script"], run_name="__main__")
    except MemoryError:
        try:
            os.write(2, b"MemoryError: the sandbox memory limit was reached\n")
        finally:
            os._exit(MEMORY_EXIT)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
