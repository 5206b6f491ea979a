"""Math answer extraction and grading: where a completion's final answer is, and whether it is right.

A task's answer spec (:class:`AnswerSpec`, recipe key ``evaluate.tasks[].answer``) says where the
answer is found: only in the text after the end-of-reasoning marker ``after`` (``</think>`` for
reasoning models; None = the whole text), by the first of the ordered ``extract`` methods that finds
one: ``boxed`` (last ``\\boxed{...}``, nested braces handled), ``gsm8k`` (last ``#### N`` line),
``answer_is`` (an explicit "the answer is X" phrase) or ``last_number`` (the last number in the text,
only when a task asks for it). A completion without the marker (its reasoning never ended, e.g. cut
by the token budget) scores wrong unless ``on_missing`` is ``whole_text``; one without a findable
answer scores wrong. References may be GSM8K solutions (``... #### 72``) or plain MATH answers.
Equivalence: normalised string equality, exact integer comparison, else ``math_verify`` in a helper
process with a time limit (:mod:`rac.eval.verify`), so the verdict is the same in any thread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass

from rac.errors import RacError
from rac.eval.verify import VerifyTimeout, equivalent

log = logging.getLogger(__name__)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")
_INTEGER = re.compile(r"-?\d+")

EXTRACT_METHODS = ("boxed", "gsm8k", "answer_is", "last_number")
ON_MISSING = ("wrong", "whole_text")
REASONING_END_MARKERS = ("</think>",)
# `extract: null` means the data set's own rule; keep in sync with schemas/recipe.schema.json
DATASET_EXTRACT: dict[str, tuple[str, ...]] = {
    "gsm8k_test": ("gsm8k", "boxed"), "gsm8k_train": ("gsm8k", "boxed"),
    "math500": ("boxed",), "math_train": ("boxed",),
}
DEFAULT_EXTRACT = ("boxed",)


class AnswerSpecError(RacError, ValueError):
    """An answer spec names an unknown extraction method or on_missing rule."""


@dataclass(frozen=True)
class AnswerSpec:
    """Where a completion's final answer is (see the module docstring)."""

    after: str | None = None
    extract: tuple[str, ...] = DEFAULT_EXTRACT
    on_missing: str = "wrong"

    def __post_init__(self) -> None:
        unknown = [m for m in self.extract if m not in EXTRACT_METHODS]
        if unknown or not self.extract:
            raise AnswerSpecError(f"answer.extract: unknown or empty methods {list(self.extract)}; "
                                  f"choose from {', '.join(EXTRACT_METHODS)}")
        if self.on_missing not in ON_MISSING:
            raise AnswerSpecError(f"answer.on_missing: {self.on_missing!r} is not one of {', '.join(ON_MISSING)}")
        if self.after is not None and not self.after:
            raise AnswerSpecError("answer.after: an empty marker; use null for the whole text")

    def as_dict(self) -> dict:
        return {"after": self.after, "extract": list(self.extract), "on_missing": self.on_missing}


GENERIC_SPEC = AnswerSpec(extract=("boxed", "gsm8k"))  # callers without a task (rollout correctness)


def default_extract(dataset: str | None) -> tuple[str, ...]:
    """The extraction methods of a builtin data set (``boxed`` for others and for local files)."""
    return DATASET_EXTRACT.get(dataset or "", DEFAULT_EXTRACT)


def resolve_spec(answer: dict | None, dataset: str | None, *, vocabulary: Collection[str] = (),
                 stripped: Collection[str] = (), prompt: str = "") -> AnswerSpec:
    """The answer spec of a task from its recipe ``answer`` section and the model's tokenizer.

    ``after: auto`` becomes the first :data:`REASONING_END_MARKERS` entry in ``vocabulary`` (the
    tokenizer's tokens and chat template: a reasoning model), else None. A marker the engine strips
    from the decoded text (a special token in ``stripped``) is an error, since no completion could
    contain it. When the rendered ``prompt`` already ends with the marker (reasoning switched off by
    the template or the forced prefix), the completion is all answer: the whole text is searched.
    """
    answer = answer or {}
    after = answer.get("after", "auto")
    if after == "auto":
        after = next((m for m in REASONING_END_MARKERS if m in vocabulary), None)
    if after is not None and after in stripped:
        raise AnswerSpecError(f"answer.after: {after!r} is a special token of this tokenizer, which the engine "
                              "removes from the decoded text; set answer.after to null or another marker")
    if after is not None and prompt.rstrip().endswith(after):
        after = None
    extract = answer.get("extract")
    return AnswerSpec(after, tuple(extract) if extract else default_extract(dataset),
                      answer.get("on_missing", "wrong"))


@dataclass(frozen=True)
class GradeResult:
    """What was extracted (None when nothing), whether it matches, and how the grading ended:
    "graded", "no_marker" (the ``after`` marker is missing), "no_answer" (no method found one) or
    "timeout" (the equivalence check ran out of time; scored wrong)."""

    extracted: str | None
    correct: bool
    status: str = "graded"


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


def _number_or_text(text: str) -> str:
    text = text.strip()
    match = _NUMBER.match(text)
    return _clean_number(match.group(0)) if match else text.strip("$ .")


def _find(method: str, text: str) -> str | None:
    if method == "boxed":
        return last_boxed(text)
    if method == "gsm8k":
        hashes = _GSM8K.findall(text)
        return _number_or_text(hashes[-1]) if hashes else None
    if method == "answer_is":
        phrases = _ANSWER_IS.findall(text)
        return _number_or_text(phrases[-1]) if phrases else None
    numbers = _NUMBER.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def answer_region(text: str, spec: AnswerSpec) -> str | None:
    """The part of ``text`` searched for the answer: after the last ``after`` marker; None when the
    marker is missing and ``on_missing`` is "wrong"."""
    if spec.after is None:
        return text
    head, marker, tail = text.rpartition(spec.after)
    if marker:
        return tail
    return text if spec.on_missing == "whole_text" else None


def extract_answer(text: str, spec: AnswerSpec | None = None) -> str | None:
    """The final answer of a completion under ``spec`` (default :data:`GENERIC_SPEC`); None if none."""
    spec = spec or GENERIC_SPEC
    region = answer_region(text or "", spec)
    if region is None:
        return None
    for method in spec.extract:
        found = _find(method, region)
        if found is not None and found.strip():
            return found.strip()
    return None


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


def answers_match(predicted: str, reference: str) -> bool:
    """True when ``predicted`` and ``reference`` denote the same mathematical object.

    Raises :class:`rac.eval.verify.VerifyTimeout` when ``math_verify`` runs out of time.
    """
    pred, ref = _normalise(predicted), _normalise(reference)
    if pred == ref:
        return True
    if _INTEGER.fullmatch(pred) and _INTEGER.fullmatch(ref):
        return int(pred) == int(ref)
    return equivalent(reference, predicted)


def grade(prediction_text: str, reference: object, spec: AnswerSpec | None = None) -> GradeResult:
    """Extract the answer of ``prediction_text`` under ``spec`` and compare it with ``reference``."""
    if reference is None:
        raise ValueError("grade(): the problem has no reference answer (check the task's answer_field)")
    spec = spec or GENERIC_SPEC
    if answer_region(prediction_text or "", spec) is None:
        return GradeResult(None, False, "no_marker")
    extracted = extract_answer(prediction_text or "", spec)
    if extracted is None:
        return GradeResult(None, False, "no_answer")
    try:
        return GradeResult(extracted, answers_match(extracted, reference_answer(reference)))
    except VerifyTimeout as exc:
        log.warning("%s; graded wrong", exc)
        return GradeResult(extracted, False, "timeout")


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
    Samples cut by the token budget (finish reason "length") are counted in ``truncated`` and left
    out of ``accuracy_excluding_truncated`` (None when every sample was cut), so a budget that is too
    small is visible next to the accuracy instead of inside it.
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
    finished = [bool(r["correct"]) for r in records if r["finish_reason"] != "length"]
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
        "truncated": n - len(finished),
        "truncated_fraction": (n - len(finished)) / n if n else 0.0,
        "accuracy_excluding_truncated": sum(finished) / len(finished) if finished else None,
        "generated_tokens": total,
        "wall_seconds": round(wall_seconds, 3),
        "tokens_per_second": total / wall_seconds if wall_seconds > 0 else 0.0,
        "max_new_tokens": max_new_tokens,
    }


def grading_counts(records: list[dict]) -> dict:
    """How math samples ended: ``no_answer`` (no marker or no answer found, scored wrong) and
    ``grading_timeouts`` (the equivalence check ran out of time, scored wrong)."""
    statuses = [r.get("status") for r in records]
    return {"no_answer": sum(s in ("no_marker", "no_answer") for s in statuses),
            "grading_timeouts": sum(s == "timeout" for s in statuses)}
