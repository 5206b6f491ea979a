"""``math_verify`` equivalence checks in a helper process, with a time limit that works from any thread.

``math_verify`` enforces its own time limits with ``signal.alarm``, which only works on the main
thread of the main interpreter: from a worker thread its ``parse``/``verify`` raise ``ValueError``,
which they (or their callers) swallow into "not equal", so the same pair of answers graded from a
thread came out wrong. Here ``parse``/``verify`` run with their timeouts disabled in one long-lived
helper process (a fresh interpreter, so it is safe after torch or CUDA started threads); the caller waits at
most ``timeout_s`` for the verdict and otherwise kills the helper, restarts it on the next call and
reports a timeout, which the grader counts and scores as wrong (fail closed). The verdict therefore
does not depend on the calling thread or process.
"""

from __future__ import annotations

import atexit
import json
import logging
import select
import subprocess
import sys
import threading
from typing import IO

log = logging.getLogger(__name__)

VERIFY_TIMEOUT_S = 10.0  # parse of both answers + verify, per comparison
_START_TIMEOUT_S = 300.0  # starting Python and importing sympy on a loaded machine

# The helper process: standalone (needs math_verify, not rac), so it never re-imports the caller's
# __main__ the way multiprocessing's spawn does. One JSON request per line, one JSON reply per line.
HELPER_SOURCE = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)
try:
    from math_verify import parse, verify
except Exception as exc:
    print(json.dumps(["error", f"{type(exc).__name__}: {exc}"]), flush=True)
    sys.exit(0)
print(json.dumps(["ready", None]), flush=True)

def compare(gold, predicted):
    try:
        gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
        pred_parsed = parse("\\boxed{" + predicted + "}", parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # sympy fails arbitrarily on exotic expressions: not equal
        return False

for line in sys.stdin:
    gold, predicted = json.loads(line)
    print(json.dumps(["ok", compare(gold, predicted)]), flush=True)
"""


class VerifyTimeout(Exception):
    """A comparison did not finish within its time limit (the helper process was killed)."""


def _read_line(stream: IO[str], timeout_s: float) -> str | None:
    """One line from the helper within ``timeout_s``; None on timeout or when it died."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    return (stream.readline() or None) if ready else None


class Verifier:
    """One helper process serving equivalence checks; thread-safe (requests are serialised)."""

    def __init__(self, timeout_s: float = VERIFY_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-c", HELPER_SOURCE], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        assert process.stdout is not None
        line = _read_line(process.stdout, _START_TIMEOUT_S)
        if line is None:
            process.kill()
            process.wait()
            raise RuntimeError(f"the math_verify helper process did not start (exit code {process.returncode})")
        kind, detail = json.loads(line)
        if kind != "ready":
            process.wait()
            raise ImportError(f"math grading needs math-verify (pip install 'rac[eval]'): {detail}")
        self._process = process
        return process

    def _stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            for stream in (self._process.stdin, self._process.stdout):
                if stream is not None:
                    stream.close()
        self._process = None

    def close(self) -> None:
        """Stop the helper process (a later call starts a new one)."""
        with self._lock:
            self._stop()

    def equivalent(self, gold: str, predicted: str) -> bool:
        """Whether ``math_verify`` finds ``predicted`` equal to ``gold``; VerifyTimeout past the limit."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                self._stop()
                process = self._start()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps([gold, predicted]) + "\n")
                process.stdin.flush()
                line = _read_line(process.stdout, self.timeout_s)
            except (BrokenPipeError, OSError):
                line = None
            if line is not None:
                return bool(json.loads(line)[1])
            self._stop()
        raise VerifyTimeout(f"math_verify gave no verdict within {self.timeout_s:g} s comparing "
                            f"{predicted[:80]!r} with {gold[:80]!r}")


_VERIFIER = Verifier()
atexit.register(_VERIFIER.close)


def equivalent(gold: str, predicted: str) -> bool:
    """Module-level helper process: see :meth:`Verifier.equivalent`."""
    return _VERIFIER.equivalent(gold, predicted)
