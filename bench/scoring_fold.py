"""The scoring fold alone (pure functions, no I/O) in this tree beside the same fold at a baseline
commit, in the same run: the same generated events and the same fitted population go to both,
and their repetitions alternate, so the ratio holds on a machine whose absolute speed varies.

`python -m bench scoring_fold`; BENCH_FOLD_BASELINE (a git revision, default 157d663: the last
commit that met the 100,000 events/s target), BENCH_FOLD_REPEATS (default 5), and
bench/scoring.py's BENCH_CUSTOMERS and BENCH_EVENTS."""

from __future__ import annotations

import os
import pickle
import statistics
import subprocess
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from services.scoring.scores import Population
from services.stack.harness import ROOT

from .report import Row, show
from .scoring import fitted_population, generate

BASELINE = os.environ.get("BENCH_FOLD_BASELINE", "157d663")
REPEATS = int(os.environ.get("BENCH_FOLD_REPEATS", 5))
SAMPLE = 100_000  # events folded per repetition, as bench/scoring.py's fold_alone

# The clock: "cpu" (default) counts the process's own CPU time, which other work on a shared
# machine barely moves (on an idle one it is the wall clock: the fold is one thread); "wall"
# counts elapsed time.
CLOCK = os.environ.get("BENCH_FOLD_CLOCK", "cpu")

# Runs in a process whose PYTHONPATH is one tree: that tree's own fold_alone, once per line read
# (timed by the clock given: fold_alone reads time.perf_counter).
WORKER = """
import pickle, sys, time, types
import bench.scoring
if sys.argv[2] == "cpu":
    bench.scoring.time = types.SimpleNamespace(perf_counter=time.process_time)
records, now, population = pickle.loads(open(sys.argv[1], "rb").read())
for _ in sys.stdin:
    print(bench.scoring.fold_alone(records, now, population), flush=True)
"""


def baseline_tree(revision: str, into: Path) -> Path:
    """The baseline's files (git archive: no worktree to clean up)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "services", "bench", "schemas"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def start_worker(tree: Path, inputs: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(inputs), CLOCK],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def run_once(worker: subprocess.Popen) -> float:
    worker.stdin.write("run\n")
    worker.stdin.flush()
    line = worker.stdout.readline()
    if not line:
        raise RuntimeError(f"fold worker ended (exit {worker.wait()})")
    return float(line)


def compare(
    records: list[tuple[bytes, bytes]],
    now: datetime,
    population: Population,
    revision: str = BASELINE,
    repeats: int = REPEATS,
) -> tuple[float, float]:
    """(median events/s of this tree's fold, the baseline's), alternating repetitions; both fold
    the first SAMPLE events under `population` (what this tree fits on all of them)."""
    with tempfile.TemporaryDirectory(prefix="fold-bench-") as scratch:
        inputs = Path(scratch) / "inputs.pickle"
        inputs.write_bytes(pickle.dumps((records[:SAMPLE], now, population)))
        ours = start_worker(ROOT, inputs)
        theirs = start_worker(baseline_tree(revision, Path(scratch) / "baseline"), inputs)
        try:
            mine, base = [], []
            for k in range(repeats):
                # who goes first alternates too, so neither always runs right after the other
                pair = (ours, theirs) if k % 2 == 0 else (theirs, ours)
                first, second = run_once(pair[0]), run_once(pair[1])
                mine.append(first if pair[0] is ours else second)
                base.append(second if pair[0] is ours else first)
                print(
                    f"  fold {k + 1}/{repeats}: this tree {mine[-1]:,.0f}, {revision} {base[-1]:,.0f} events/s"
                )
        finally:
            for worker in (ours, theirs):
                worker.stdin.close()
                worker.wait(timeout=60)
    return statistics.median(mine), statistics.median(base)


def fold_rows(records: list[tuple[bytes, bytes]], now: datetime, population: Population) -> list[Row]:
    mine, base = compare(records, now, population)
    return [
        Row(
            "scoring",
            "scoring fold alone (no I/O), median",
            mine,
            f"events/s ({CLOCK} time)",
            f"the same fold at {BASELINE}, same events",
            base,
        ),
        Row(
            "scoring",
            "scoring fold alone (no I/O), median",
            mine,
            f"events/s ({CLOCK} time)",
            "target",
            100_000,
        ),
    ]


def main() -> None:
    now = datetime.now(UTC)
    records = generate(now)
    show(
        f"Scoring fold alone, {min(SAMPLE, len(records)):,} events, {REPEATS} repetitions",
        fold_rows(records, now, fitted_population(records, now)),
    )


if __name__ == "__main__":
    main()
