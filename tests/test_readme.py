"""Every ```bash line of README.md runs as written, or in an explicit dry form when it needs a GPU,
the hub or hours (listed below with the reason); a new heavy line without a mapping fails the test."""

from __future__ import annotations

import glob
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from rac.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

SKIP = {  # lines not run at all, and why
    "make demo": "runs the CPU demo grid (~16 min); its recipes are validated by `rac validate recipes/**/*.yaml`",
    "make test": "runs the whole test suite",
    "rac rollouts show runs/<run>": "needs a finished run (tests/test_e2e.py runs `rollouts show` on one)",
    "rac report runs/<grid>": "needs a finished grid (tests/test_e2e.py and tests/report cover it)",
    "torchrun --nproc_per_node 8 -m rac.cli run recipes/7b_50pct.yaml --cache /shared/rac-cache":
        "needs 8 GPUs (tests/pipeline/test_torchrun.py runs torchrun with 2 gloo ranks)",
    "rac grid recipes/grids/table1_math500.yaml --executor ray --address ray://head:10001 --cache /shared/rac-cache":
        "needs a Ray cluster (tests/pipeline/test_executors.py runs a local one)",
    "rac grid recipes/grids/table1_math500.yaml --executor slurm --slurm-partition gpu --slurm account=myproj":
        "needs Slurm (tests/pipeline/test_executors.py runs submitit's local executor)",
}
DRY = {  # heavy line -> what runs in its place: the same recipe and arguments, resolved and checked only
    "rac run recipes/7b_50pct.yaml":
        "rac validate --portable recipes/7b_50pct.yaml",
    "rac run recipes/7b_50pct.yaml prune.sparsity=0.4 evaluate.limit=50":
        "rac validate --portable recipes/7b_50pct.yaml prune.sparsity=0.4 evaluate.limit=50",
    "rac run recipes/demo/mlp24_fp8.yaml ~quantize export.format=hf":
        "rac show recipes/demo/mlp24_fp8.yaml ~quantize export.format=hf",
    # plan runs offline (the paper models' shapes come from rac's table when the hub is unreachable)
    "rac plan recipes/7b_50pct.yaml":
        "rac plan recipes/7b_50pct.yaml",
    # --status plans every cell: the demo grid's model is offline
    "rac grid recipes/demo/demo.yaml --status":
        "rac grid recipes/demo/demo.yaml --status",
    "rac grid recipes/demo/base.yaml --axis prune.sparsity=0.3,0.5 --axis "
    "@recipes/demo/overlays/c4.yaml,@recipes/demo/overlays/rac.yaml":
        "rac grid recipes/demo/base.yaml --axis prune.sparsity=0.3,0.5 --axis "
        "@recipes/demo/overlays/c4.yaml,@recipes/demo/overlays/rac.yaml --dry-run",
    # the two cells picked, previewed (their recipes need a GPU and the hub)
    "rac grid recipes/grids/table4_2of4_fp8.yaml --cell dense_baseline --cell rac_fp8_first_third":
        "rac grid recipes/grids/table4_2of4_fp8.yaml --cell dense_baseline --cell rac_fp8_first_third --dry-run",
    # every cell expanded and validated; only the engine check of this machine is left out
    "rac grid recipes/grids/table1_math500.yaml":
        "rac validate --portable recipes/grids/table1_math500.yaml",
    # origin/main need not exist in a checkout: review the working tree against HEAD instead
    "rac diff --git origin/main..HEAD --format md": "rac diff --git HEAD --format md",
    "rac review origin/main..HEAD --output review.md": "rac review HEAD --output {tmp}/review.md",
}
HEAVY = re.compile(r"^(make |rac (run|plan|rollouts|report)\b|rac grid (?!.*--dry-run))")
EXIT_CODES = {"diff": (0, 1)}  # rac diff: 1 = different


def bash_lines() -> list[str]:
    """The command lines of the README's ```bash blocks (comments dropped, `;` lists split)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL):
        for raw in block.splitlines():
            for part in " ".join(shlex.split(raw, comments=True)).split(";"):
                if part.strip():
                    lines.append(part.strip())
    return lines


LINES = bash_lines()


def test_heavy_lines_are_mapped_and_the_maps_are_current():
    unmapped = [line for line in LINES if HEAVY.match(line) and line not in DRY and line not in SKIP]
    assert not unmapped, f"README lines that need a GPU/hub/hours: add a dry form to DRY: {unmapped}"
    stale = [line for line in [*DRY, *SKIP] if line not in LINES]
    assert not stale, f"mapped lines no longer in the README: {stale}"


def _in_git_checkout() -> bool:
    try:
        subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=REPO, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


SLOW = ("rac validate recipes/**/*.yaml", "rac review origin/main..HEAD", "rac diff recipes/grids/")  # 8-20 s each


@pytest.mark.parametrize("line", [pytest.param(line, marks=[pytest.mark.slow] if line.startswith(SLOW) else [])
                                  for line in LINES if line not in SKIP])
def test_readme_line_runs(line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "cache"))
    command = DRY.get(line, line).format(tmp=tmp_path)
    if command.startswith("shopt "):
        return  # bash set-up of the next command (globstar, expanded below)
    if ("HEAD" in command or "--git" in command or "review" in command) and not _in_git_checkout():
        pytest.skip("not a git checkout")
    words = shlex.split(command)
    assert words[0] == "rac", f"README line is not a rac command: {line!r} (add it to SKIP with a reason)"
    # `shopt -s globstar` semantics: ** matches any depth; a pattern matching nothing stays as is
    args = [match for word in words[1:]
            for match in ((sorted(glob.glob(word, recursive=True)) or [word]) if "*" in word else [word])]
    code = main(args)
    out = capsys.readouterr()
    assert code in EXIT_CODES.get(args[0], (0,)), f"{command!r} exited {code}:\n{out.out}\n{out.err}"
