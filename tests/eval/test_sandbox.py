"""The sandbox enforces time, memory and network limits."""

from __future__ import annotations

from rac.eval.sandbox import SandboxLimits, isolation_summary, run_python

LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=256)


def test_runs_code_in_a_fresh_temp_dir():
    result = run_python("import os; print(os.listdir('.'), os.environ.get('HOME') == os.getcwd())", LIMITS)
    assert result.ok, result.stderr
    assert result.stdout.strip() == "['main.py'] True"


def test_kills_an_infinite_loop():
    result = run_python("while True:\n    pass\n", LIMITS)
    assert result.status == "timeout"
    assert result.seconds < 10


def test_stops_a_memory_bomb():
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\n", LIMITS)
    assert result.status == "memory"


def test_blocks_network():
    code = ("import socket\n"
            "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\nexcept OSError:\n    print('blocked')\n")
    result = run_python(code, LIMITS)
    assert result.ok and result.stdout.strip() == "blocked"
    assert "socket prelude" in isolation_summary()["network"]


def test_failing_code_reports_error():
    result = run_python("raise SystemExit(3)", LIMITS)
    assert result.status == "error" and result.returncode == 3
