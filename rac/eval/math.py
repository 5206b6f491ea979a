"""Math answer extraction and grading with ``math_verify``.

A prediction's answer is taken from its last ``\\boxed{...}`` (nested braces handled), else a GSM8K
style ``#### N`` line, else an explicit "answer is X" phrase, else the last number in the text
(commas and dollar signs removed). References may be GSM8K solutions (``... #### 72``) or plain
MATH answers (``\\frac{3}{4}``). Equivalence is decided by ``math_verify.verify`` on both parsed
as boxed LaTeX, with a normalised string comparison as fallback when parsing yields nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*\$?\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")


@dataclass(frozen=True)
class GradeResult:
    """What was extracted from the prediction (None when nothing) and whether it matches."""

    extracted: str | None
    correct: bool


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced; None if absent."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
            i += 1
    return None


def _clean_number(token: str) -> str:
    return token.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")


def extract_answer(text: str) -> str | None:
    """The final answer of a completion (see module docstring for the order of rules)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    hashes = _GSM8K.findall(text)
    if hashes:
        return _clean_number(hashes[-1].strip()) if _NUMBER.fullmatch(hashes[-1].strip()) else hashes[-1].strip()
    phrases = _ANSWER_IS.findall(text)
    if phrases:
        numbers = _NUMBER.findall(phrases[-1])
        if numbers:
            return _clean_number(numbers[0])
    numbers = _NUMBER.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def reference_answer(reference: object) -> str:
    """The final answer of a reference: GSM8K ``#### N`` -> ``N`` (commas dropped), else the string."""
    ref = str(reference).strip()
    if "####" in ref:
        ref = _clean_number(ref.rsplit("####", 1)[1].strip())
    return ref


def _normalise(text: str) -> str:
    text = re.sub(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}", r"\1", text)
    text = text.replace("\\!", "").replace("\\,", "").replace("\\left", "").replace("\\right", "")
    text = text.replace("$", "").replace(" ", "").rstrip(".")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return text.lower()


def _parse(expr: str) -> list:
    from math_verify import parse

    try:
        return parse(f"\\boxed{{{expr}}}", parsing_timeout=5)
    except Exception as exc:  # noqa: BLE001 - math_verify raises anything on pathological input
        log.debug("math_verify could not parse %r: %s", expr, exc)
        return []


def answers_match(predicted: str, reference: str) -> bool:
    """True when ``predicted`` and ``reference`` denote the same mathematical object."""
    if _normalise(predicted) == _normalise(reference):
        return True
    from math_verify import verify

    gold, pred = _parse(reference), _parse(predicted)
    if not gold or not pred:
        return False
    try:
        return bool(verify(gold, pred, timeout_seconds=5))
    except Exception as exc:  # noqa: BLE001 - sympy fails arbitrarily on exotic expressions
        log.debug("math_verify could not compare %r and %r: %s", predicted, reference, exc)
        return False


def grade(prediction_text: str, reference: object) -> GradeResult:
    """Extract the answer of ``prediction_text`` and compare it with ``reference``."""
    if reference is None:
        raise ValueError("grade(): the problem has no reference answer (check the task's answer_field)")
    extracted = extract_answer(prediction_text or "")
    if extracted is None or not extracted.strip():
        return GradeResult(None, False)
    return GradeResult(extracted, answers_match(extracted, reference_answer(reference)))


# -- metrics shared by the math and code tasks ------------------------------------------------------

def standard_error(per_problem: list[float]) -> float:
    """Standard error of the mean accuracy: ``sqrt(Var(a_i) / n)`` with the population variance of the
    per-problem accuracies ``a_i`` (mean correctness over that problem's samples). With one sample per
    problem ``a_i`` is 0/1 and this is the binomial ``sqrt(p (1 - p) / n)`` reported in the paper."""
    n = len(per_problem)
    if n == 0:
        return 0.0
    mean = sum(per_problem) / n
    var = sum((a - mean) ** 2 for a in per_problem) / n
    return (var / n) ** 0.5


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021: ``1 - C(n - c, k) / C(n, k)`` for n samples, c correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):  # prod (1 - k/i), numerically stable form of the ratio
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def summarize(records: list[dict], wall_seconds: float, max_new_tokens: int | None) -> dict:
    """Task metrics from per-sample records (keys: id, correct, length, finish_reason).

    ``accuracy`` is the mean correctness over all samples (= unbiased pass@1), ``accuracy_se`` its
    standard error over problems; ``pass_at_k`` holds k = 1, 2, 4, ... up to the samples per problem.
    """
    by_problem: dict[str, list[bool]] = {}
    for record in records:
        by_problem.setdefault(str(record["id"]), []).append(bool(record["correct"]))
    per_problem = [sum(v) / len(v) for v in by_problem.values()]
    samples = min((len(v) for v in by_problem.values()), default=0)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= samples]
    if samples and samples not in ks:
        ks.append(samples)
    pass_k = {
        str(k): (sum(pass_at_k(len(v), sum(v), k) for v in by_problem.values()) / len(by_problem))
        for k in ks
    }
    lengths = sorted(int(r["length"]) for r in records)
    total = sum(lengths)
    n = len(lengths)
    median = 0.0
    if n:
        median = float(lengths[n // 2]) if n % 2 else (lengths[n // 2 - 1] + lengths[n // 2]) / 2
    return {
        "n_problems": len(by_problem),
        "samples": samples,
        "accuracy": sum(per_problem) / len(per_problem) if per_problem else 0.0,
        "accuracy_se": standard_error(per_problem),
        "pass_at_k": pass_k,
        "mean_length": total / n if n else 0.0,
        "median_length": median,
        "truncated_fraction": sum(r["finish_reason"] == "length" for r in records) / n if n else 0.0,
        "generated_tokens": total,
        "wall_seconds": round(wall_seconds, 3),
        "tokens_per_second": total / wall_seconds if wall_seconds > 0 else 0.0,
        "max_new_tokens": max_new_tokens,
    }
