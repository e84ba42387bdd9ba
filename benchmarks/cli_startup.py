"""`tsm-video` start-up: seconds from process start to exit for help, argument errors and input errors.

Each command runs as a fresh ``python -m tsm_video.cli ...`` process from an empty folder (a
process-level timer: interpreter start, imports, parsing, the error, exit). The candidate is this
checkout; each ``--baseline REF`` is that git revision's ``tsm_video``, ``eval_crafter`` and
``data_tools`` (``git archive``) run by the same interpreter, in the same run, interleaved with the
candidate (round-robin over trees, so load drifts hit all alike). Reported per command and tree:
median and best wall seconds, and the median CPU seconds (user + sys) of the child process,
which the machine's load inflates less than wall time.

    python benchmarks/cli_startup.py --baseline c5b888e --baseline HEAD~1   # writes RESULTS.md
    python benchmarks/cli_startup.py --quick                                  # 2 runs, no write

Goal (issue 16): help and argument errors under 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(ROOT))
from machine import cpu_model  # noqa: E402
from results_md import write_section  # noqa: E402

PACKAGES = ("tsm_video", "eval_crafter", "data_tools")
GOAL_S = 1.5

#: label → argv after ``python -m tsm_video.cli``; every one but ``--help`` exits with code 2.
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "argument error (train without --cfg)": ["train"],
    "argument error (data synth --height -8)": ["data", "synth", "--out", "s", "--height", "-8"],
    "config not found (train --cfg nosuch.yaml)": ["train", "--cfg", "nosuch.yaml", "--dry-run"],
    "generate --cfg nosuch.yaml": ["generate", "--cfg", "nosuch.yaml", "--prompt", "x", "--out", "o"],
    "data subset --csv nosuch.csv": ["data", "subset", "--csv", "nosuch.csv", "--out", "s.csv"],
    "eval evalcrafter --videos nosuch": ["eval", "evalcrafter", "--videos", "nosuch", "--out", "r.json"],
    "eval compare nosuch.json": ["eval", "compare", "nosuch.json", "nosuch.json"],
}


def _tree(ref: str, into: Path) -> Path:
    """The packages of git revision ``ref`` under ``into/<ref>``."""
    out = into / ref.replace("/", "_").replace("~", "-")
    archive = ["git", "archive", ref, *PACKAGES]
    data = subprocess.run(archive, cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(out, filter="data")
    return out


def _run_once(tree: Path, argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, child CPU s, exit code) of one ``python -m tsm_video.cli argv`` process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = subprocess.run(
        [sys.executable, "-m", "tsm_video.cli", *argv], cwd=cwd, env=env, capture_output=True
    ).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, code


def measure(trees: dict[str, Path], runs: int) -> dict[str, dict[str, dict]]:
    """``{command: {tree label: {median_s, best_s, median_cpu_s, exit_codes}}}``."""
    samples: dict[str, dict[str, list]] = {c: {t: [] for t in trees} for c in COMMANDS}
    with tempfile.TemporaryDirectory() as empty:
        for _ in range(runs):
            for label, argv in COMMANDS.items():
                for name, tree in trees.items():
                    samples[label][name].append(_run_once(tree, argv, Path(empty)))
    return {
        label: {
            name: {
                "median_s": statistics.median(s[0] for s in runs_),
                "best_s": min(s[0] for s in runs_),
                "median_cpu_s": statistics.median(s[1] for s in runs_),
                "exit_codes": sorted({s[2] for s in runs_}),
            }
            for name, runs_ in per_tree.items()
        }
        for label, per_tree in samples.items()
    }


def _section(record: dict) -> str:
    start, end = ("<!-- cli_startup:start -->", "<!-- cli_startup:end -->")
    names = list(record["trees"])
    m = record["machine"]
    header = " | ".join(f"{n} median s (best) | {n} CPU s" for n in names)
    rows = []
    for label, per_tree in record["results"].items():
        cells = " | ".join(
            f"{r['median_s']:.2f} ({r['best_s']:.2f}) | {r['median_cpu_s']:.2f}" for r in per_tree.values()
        )
        rows.append(f"| {label} | {cells} |")
    results = record["results"]
    worst = max(r["candidate"]["median_s"] for c, r in results.items() if c.startswith(("--", "argument")))
    return "\n".join(
        [
            start,
            "## cli_startup — `tsm-video` help and error paths (`benchmarks/cli_startup.py`)",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; load average "
            f"{m['load_start'][0]:.1f} → {m['load_end'][0]:.1f} (1 min). One fresh process per run, "
            f"from an empty folder; {record['runs']} interleaved runs per command and tree. Trees: "
            + ", ".join(f"`{n}` = {record['trees'][n]}" for n in names)
            + ".",
            "",
            f"| command | {header} |",
            "| --- |" + " --- |" * (2 * len(names)),
            *rows,
            "",
            f"Help and argument errors, candidate: worst median **{worst:.2f} s** (goal < {GOAL_S} s). "
            "Wall seconds on a shared machine scale with its load; the CPU column is the child's own "
            "user + sys time.",
            end,
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--baseline", action="append", default=[], metavar="REF", help="git revision to compare"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per command and tree (default: 5)")
    parser.add_argument("--quick", action="store_true", help="2 runs, candidate only, nothing written")
    args = parser.parse_args(argv)
    runs = 2 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        baselines = [] if args.quick else args.baseline
        trees = {"candidate": REPO} | {ref: _tree(ref, Path(tmp)) for ref in baselines}
        revisions = {"candidate": "this checkout"} | {
            ref: subprocess.run(
                ["git", "rev-parse", "--short", ref], cwd=REPO, check=True, capture_output=True, text=True
            ).stdout.strip()
            for ref in trees
            if ref != "candidate"
        }
        load_start = os.getloadavg()
        results = measure(trees, runs)
        load_end = os.getloadavg()
    record = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_start": load_start,
            "load_end": load_end,
        },
        "runs": runs,
        "trees": revisions,
        "results": results,
    }
    print(json.dumps(record, indent=1))
    bad = [(c, t, r["exit_codes"]) for c, per in results.items() for t, r in per.items()]
    bad = [(c, t, codes) for c, t, codes in bad if codes != ([0] if c == "--help" else [2])]
    if bad:  # a baseline's traceback exits 1
        print(f"note: unexpected exit codes (help: 0, errors: 2): {bad}", file=sys.stderr)
    if not args.quick:
        (ROOT / "results").mkdir(exist_ok=True)
        (ROOT / "results" / "cli_startup.json").write_text(json.dumps(record, indent=1) + "\n")
        tags = ("<!-- cli_startup:start -->", "<!-- cli_startup:end -->")
        write_section(ROOT / "RESULTS.md", *tags, _section(record))
    return record


if __name__ == "__main__":
    main()
