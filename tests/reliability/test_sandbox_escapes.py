"""Escape attempts against the code sandbox (issue 13), each with a harmless payload.

Every case runs under each isolation backend that works on this machine (bwrap, unshare); a backend
that does not work is skipped with its probe's reason, unless RAC_REQUIRE_SANDBOX=1 (then it fails).
Where a case could pass for a reason other than the isolation, an unsafe-local control run shows
that the same attack does succeed without it, so the test can fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rac.eval.sandbox import SandboxLimits, probe, run_with
from rac.eval.sandbox_backends import BACKENDS

REPO = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=256)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    reason = probe(request.param)
    if reason:
        if os.environ.get("RAC_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"{request.param} isolation does not work here: {reason}")
        pytest.skip(f"{request.param} isolation does not work on this machine: {reason}")
    return request.param


def _processes_with(marker: str) -> list[int]:
    """PIDs (host view) whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _in_fresh_process(code: str, backend: str, env: dict[str, str] | None = None, timeout_s: float = 30) -> dict:
    """Run ``code`` in the sandbox from a fresh Python process (a stand-in for rac); report result and RSS.

    ``RAC_PID`` in ``code`` becomes that process's PID."""
    driver = (
        "import json, os, resource, sys\n"
        "from rac.eval.sandbox import SandboxLimits, run_with\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"r = run_with(sys.stdin.read().replace('RAC_PID', str(os.getpid())), SandboxLimits(timeout_s={timeout_s}), {backend!r})\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'status': r.status, 'stdout': r.stdout, 'stderr': r.stderr, "
        "'rss_growth_kib': after - before}))\n"
    )
    done = subprocess.run([sys.executable, "-c", driver], input=code, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, check=True)
    return json.loads(done.stdout)


def test_namespaces_are_in_force(backend):
    code = ("import json, os, socket\n"
            "print(json.dumps({'pid': os.getpid(), 'uid': os.getuid(), 'ppid': os.getppid(),\n"
            "    'nics': [n for _, n in socket.if_nameindex()], 'root': sorted(os.listdir('/'))}))\n")
    result = run_with(code, LIMITS, backend)
    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    assert seen["pid"] < 16 and seen["ppid"] <= 1, "not in a PID namespace"
    assert seen["nics"] in ([], ["lo"]), "not in an empty network namespace"
    assert "work" not in seen["root"] and "home" not in seen["root"], "host folders are mounted"
    if os.getuid() == 0:
        assert seen["uid"] != 0, "generated code runs as root"


def test_cannot_write_outside_its_work_dir(backend, tmp_path):
    name = f"rac-escaped-{uuid.uuid4().hex}"
    targets = [tmp_path / name, Path("/") / name, Path("/usr") / name, Path("/etc") / name]
    code = (f"for path in {[str(t) for t in targets]!r}:\n"
            "    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n"
            "    except OSError as exc:\n        print('refused', path, exc.errno)\n"
            "open('inside.txt', 'w').write('fine')\nprint('inside ok')\n")
    result = run_with(code, LIMITS, backend)
    assert result.ok, result.stderr
    assert "wrote" not in result.stdout and "inside ok" in result.stdout
    assert not [t for t in targets if t.exists()]


def test_cannot_list_home_or_cache(backend, tmp_path):
    cache = tmp_path / "cache"
    (cache / "secret-model--sentinel").mkdir(parents=True)
    home = os.path.expanduser("~")
    code = ("import json, os\nseen = {}\n"
            f"for path in ({str(cache)!r}, {home!r}):\n"
            "    try:\n        seen[path] = os.listdir(path)\n    except OSError:\n        seen[path] = None\n"
            "print(json.dumps(seen))\n")
    result = run_with(code, LIMITS, backend)
    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    assert seen[str(cache)] is None
    on_interpreter_path = {Path(p).relative_to(home).parts[0] for p in (sys.base_prefix, sys.base_exec_prefix)
                           if Path(p).is_relative_to(home)}
    leaked = (set(seen[home] or []) & set(os.listdir(home))) - on_interpreter_path
    assert not leaked, f"host home entries visible in the sandbox: {sorted(leaked)}"


def test_cannot_read_the_parent_environment(backend):
    secret = f"rac-secret-{uuid.uuid4().hex}"
    code = ("import os\nfor pid in (os.getppid(), 1, RAC_PID):\n"
            "    try:\n        print(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))\n"
            "    except OSError as exc:\n        print('denied', pid, exc.errno)\n")
    seen = _in_fresh_process(code, backend, {"RAC_TEST_SECRET": secret})
    assert seen["status"] == "ok", seen["stderr"]
    assert secret not in seen["stdout"] and secret not in seen["stderr"]
    control = _in_fresh_process(code, "none", {"RAC_TEST_SECRET": secret})
    assert secret in control["stdout"], "control: without isolation the parent's environment is readable"


def test_cannot_signal_rac(backend):
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        code = (f"import os, signal\nfor pid in (os.getppid(), {os.getpid()}):\n"
                "    try:\n        os.kill(pid, signal.SIGTERM)\n        print('sent', pid)\n"
                "    except OSError as exc:\n        print('refused', pid, exc.errno)\n")
        result = run_with(code, LIMITS, backend)
        time.sleep(0.1)
        assert result.ok, result.stderr
        assert not received, "generated code sent SIGTERM to rac"
        run_with(code, LIMITS, "none")
        time.sleep(0.1)
        assert received, "control: without isolation the signal arrives"
    finally:
        signal.signal(signal.SIGTERM, previous)


def _detaching_code(marker: str, host_file: Path, holds_stdout: bool) -> str:
    """Start a setsid() grandchild that keeps appending to ``host_file`` for 20 s (holding stdout or not)."""
    loop = (f"import time\nend = time.time() + 20\nwhile time.time() < end:\n"
            f"    try:\n        open({str(host_file)!r}, 'a').write('x')\n    except OSError:\n        pass\n"
            f"    time.sleep(0.05)\n# {marker}\n")
    detach = "" if holds_stdout else "        null = os.open(os.devnull, os.O_RDWR)\n        [os.dup2(null, fd) for fd in (0, 1, 2)]\n"
    return ("import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n" + detach +
            f"        os.execv(sys.executable, [sys.executable, '-c', {loop!r}])\n    os._exit(0)\n"
            "print('main done', flush=True)\n")


@pytest.mark.parametrize(("holds_stdout", "main_loops"), [(True, False), (True, True), (False, False)],
                         ids=["holds-stdout", "holds-stdout-main-times-out", "closes-stdout"])
def test_detached_grandchild_neither_holds_the_run_nor_outlives_it(backend, tmp_path, holds_stdout, main_loops):
    marker = f"rac-detached-{uuid.uuid4().hex}"
    code = _detaching_code(marker, tmp_path / "late.txt", holds_stdout) + ("while True:\n    pass\n" if main_loops else "")
    start = time.monotonic()
    result = run_with(code, SandboxLimits(timeout_s=1.0, memory_mb=256), backend)
    elapsed = time.monotonic() - start
    assert result.status == ("timeout" if main_loops else "ok"), result.stderr
    assert elapsed < 3.0, f"a 1 s run stayed open {elapsed:.1f} s"
    time.sleep(0.3)
    assert not _processes_with(marker), "a detached descendant outlived the run"
    assert not (tmp_path / "late.txt").exists(), "a detached descendant wrote files"


def test_fork_bomb_is_limited(backend):
    marker = f"rac-fork-{uuid.uuid4().hex}"
    code = ("import os, sys, time\nforks = 0\nfor _ in range(50):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n"
            f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(20) # {marker}'])\n"
            "    forks += 1\nprint(forks)\n")
    result = run_with(code, LIMITS, backend)
    assert result.ok, result.stderr
    assert int(result.stdout) < LIMITS.max_processes < 50
    time.sleep(0.3)
    assert not _processes_with(marker)


def test_stdout_flood_is_bounded_in_memory(backend):
    code = "import sys\nchunk = b'x' * (1 << 20)\nfor _ in range(300):\n    sys.stdout.buffer.write(chunk)\n"
    seen = _in_fresh_process(code, backend)
    assert seen["status"] == "ok", seen["stderr"]
    assert len(seen["stdout"]) < 16_384 and "bytes dropped" in seen["stdout"]
    assert seen["rss_growth_kib"] < 16 * 1024, f"rac grew by {seen['rss_growth_kib']} KiB for 300 MiB of output"


def test_network_is_unreachable(backend):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = ("import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.settimeout(2)\n"
                f"try:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\n"
                "except OSError as exc:\n    print('blocked', exc.errno)\n")

        def arrived() -> bool:
            time.sleep(0.1)
            try:
                listener.accept()[0].close()
                return True
            except BlockingIOError:
                return False

        result = run_with(code, LIMITS, backend)
        assert result.ok, result.stderr
        assert not arrived() and "blocked" in result.stdout
        assert "connected" in run_with(code, LIMITS, "none").stdout and arrived(), \
            "control: without isolation the listener is reachable"


def test_memory_verdict_comes_from_the_exit_status(backend):
    printed = run_with("import sys\nprint('MemoryError', file=sys.stderr)\nraise SystemExit(1)\n", LIMITS, backend)
    assert printed.status == "error" and printed.returncode == 1
    bomb = run_with("blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n",
                    SandboxLimits(timeout_s=20.0, memory_mb=256), backend)
    assert bomb.status == "memory"
