"""The sandbox: limits, verdicts from exit status, capped output, fail-closed mode selection.

The escape attempts (filesystem, processes, network, signals) are in tests/reliability/test_sandbox_escapes.py.
"""

from __future__ import annotations

import signal

import pytest

import rac.eval.sandbox as sandbox
from rac.eval.sandbox import (
    SandboxLimits,
    SandboxUnavailableError,
    isolation_summary,
    run_python,
    select_backend,
)
from rac.eval.sandbox_io import CappedBuffer
from rac.eval.sandbox_launcher import MEMORY_EXIT

# unsafe-local: the best isolation this machine has, so these behaviour tests also run where none works
LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=256, mode="unsafe-local")


def test_runs_code_in_a_fresh_work_dir_with_an_empty_environment():
    code = "import os, json\nprint(json.dumps([os.listdir('.'), os.environ.get('HOME') == os.getcwd(), sorted(os.environ)]))"
    result = run_python(code, LIMITS)
    assert result.ok, result.stderr
    assert result.stdout.strip() == '[["main.py"], true, ["HOME", "LANG", "PATH"]]'


def test_kills_an_infinite_loop():
    result = run_python("while True:\n    pass\n", LIMITS)
    assert result.status == "timeout"
    assert result.seconds < 10


def test_stops_a_memory_bomb():
    limits = SandboxLimits(timeout_s=20.0, memory_mb=256, mode="unsafe-local")  # ~1 s on a loaded machine
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\n", limits)
    assert result.status == "memory" and result.returncode == MEMORY_EXIT


def test_printing_memory_error_is_not_a_memory_verdict():
    result = run_python("import sys\nprint('MemoryError: Cannot allocate memory', file=sys.stderr)\nsys.exit(1)\n", LIMITS)
    assert result.status == "error" and result.returncode == 1


def test_blocks_network():
    code = ("import socket\n"
            "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\nexcept OSError:\n    print('blocked')\n")
    result = run_python(code, LIMITS)
    assert result.ok and result.stdout.strip() == "blocked"
    summary = isolation_summary("unsafe-local")
    assert summary["isolation"] == result.isolation
    if result.isolation != "unsafe-local":
        assert summary["network"] == "empty network namespace"


def test_failing_code_reports_error():
    result = run_python("raise SystemExit(3)", LIMITS)
    assert result.status == "error" and result.returncode == 3


def test_a_signal_is_reported_as_a_negative_returncode():
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", LIMITS)
    assert result.status == "error" and result.returncode == -signal.SIGSEGV


def test_code_that_closes_its_output_runs_to_the_end():
    result = run_python("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(0.5)\nraise SystemExit(4)\n", LIMITS)
    assert result.status == "error" and result.returncode == 4


def test_setuid_binaries_do_not_elevate():
    result = run_python("print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])", LIMITS)
    assert result.ok and result.stdout.strip() == "1"


def test_stdin_is_empty_and_large_programs_run():
    padding = "# " + "x" * 200_000 + "\n"  # larger than a pipe buffer and than one argv string
    result = run_python(padding + "try:\n    input()\nexcept EOFError:\n    print('eof')\n", LIMITS)
    assert result.ok and result.stdout.strip() == "eof", result.stderr


def test_output_is_clipped_to_its_head_and_tail():
    result = run_python("print('A' * 50_000 + 'END')", LIMITS)
    assert result.ok and len(result.stdout) < 9000
    assert result.stdout.startswith("AAAA") and result.stdout.rstrip().endswith("END")
    assert "bytes dropped" in result.stdout


def test_capped_buffer_keeps_head_tail_and_count():
    buf = CappedBuffer(8)
    for chunk in (b"abc", b"defgh", b"ijklmnop"):
        buf.write(chunk)
    assert buf.total == 16 and bytes(buf.head) == b"abcd" and bytes(buf.tail) == b"mnop"
    assert buf.text() == "abcd\n... [8 bytes dropped] ...\nmnop"
    small = CappedBuffer(8)
    small.write(b"abcdef")
    assert small.text() == "abcdef"


@pytest.mark.parametrize(("returncode", "timed_out", "backend", "status", "reported"), [
    (0, False, "bwrap", "ok", 0),
    (128 + signal.SIGXCPU, False, "bwrap", "timeout", -signal.SIGXCPU),
    (128 + signal.SIGKILL, False, "unshare", "timeout", -signal.SIGKILL),
    (-signal.SIGKILL, False, "none", "timeout", -signal.SIGKILL),
    (MEMORY_EXIT, False, "bwrap", "memory", MEMORY_EXIT),
    (128 + signal.SIGSEGV, False, "bwrap", "error", -signal.SIGSEGV),
    (1, True, "bwrap", "timeout", 1),
])
def test_verdicts_come_from_status_and_signal(returncode, timed_out, backend, status, reported):
    assert sandbox._verdict(returncode, timed_out, backend) == (status, reported)


def _no_isolation(monkeypatch):
    monkeypatch.setattr(sandbox, "probe", lambda name: f"{name}: namespaces not permitted (test)")


def test_refuses_to_run_without_isolation(monkeypatch):
    _no_isolation(monkeypatch)
    with pytest.raises(SandboxUnavailableError, match="unsafe-local"):
        run_python("print('ran')", SandboxLimits())
    with pytest.raises(SandboxUnavailableError, match="namespaces not permitted"):
        isolation_summary()


def test_unsafe_local_is_an_explicit_opt_in(monkeypatch):
    _no_isolation(monkeypatch)
    result = run_python("print('ran')", SandboxLimits(mode="unsafe-local"))
    assert result.ok and result.stdout.strip() == "ran" and result.isolation == "unsafe-local"
    assert isolation_summary("unsafe-local")["isolation"] == "unsafe-local"


def test_a_named_backend_is_used_or_refused(monkeypatch):
    monkeypatch.setattr(sandbox, "probe", lambda name: "" if name == "unshare" else "bwrap: missing (test)")
    assert select_backend("auto") == "unshare"
    with pytest.raises(SandboxUnavailableError, match="bwrap: missing"):
        select_backend("bwrap")
    with pytest.raises(ValueError, match="evaluate.sandbox"):
        select_backend("docker")


def test_evaluate_refuses_code_tasks_before_loading_the_model(monkeypatch, recipe, stage_ctx):
    import rac.models.load
    from rac.stages.evaluate import STAGE

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the sandbox was checked")

    monkeypatch.setattr(rac.models.load, "load_model", refuse)
    _no_isolation(monkeypatch)
    data = recipe(**{"model.id": "org/no-such-model",
                     "evaluate.tasks": [{"name": "he", "type": "code", "dataset": "humaneval"}]})
    with pytest.raises(SandboxUnavailableError):
        STAGE.run(stage_ctx(data, model_identity="x"))
