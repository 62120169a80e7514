"""`make chaos`: python -m chaos [--duration S] [--clients N] [--faults a,b,...]

Every option also reads from the environment (CHAOS_DURATION, CHAOS_CLIENTS, CHAOS_FAULTS).
Exits 1 when any check finds a discrepancy."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from rich.console import Console

from .faults import CATALOGUE, FULL
from .report import print_report
from .run import Options, Run


def parse(argv: list[str]) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument(
        "--duration",
        type=float,
        default=float(env("CHAOS_DURATION", defaults.duration)),
        help="seconds of traffic at least; longer when the faults need it",
    )
    parser.add_argument("--clients", type=int, default=int(env("CHAOS_CLIENTS", defaults.clients)))
    parser.add_argument(
        "--faults",
        default=env("CHAOS_FAULTS", ",".join(FULL)),
        help=f"comma-separated, in order, from: {', '.join(CATALOGUE)}",
    )
    parser.add_argument("--gap", type=float, default=defaults.gap, help="seconds of traffic between faults")
    parser.add_argument("--history-customers", type=int, default=defaults.history_customers)
    parser.add_argument("--quiet-seconds", type=float, default=defaults.quiet_seconds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--data-dir", type=Path, default=Path(env("CHAOS_DATA_DIR", str(defaults.data_dir))))
    args = parser.parse_args(argv)
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = [f for f in faults if f not in CATALOGUE]
    if unknown:
        parser.error(f"unknown faults {unknown}; choose from {', '.join(CATALOGUE)}")
    return Options(
        duration=args.duration,
        clients=args.clients,
        faults=faults,
        gap=args.gap,
        history_customers=args.history_customers,
        quiet_seconds=args.quiet_seconds,
        seed=args.seed,
        data_dir=args.data_dir,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    console = Console()
    result = asyncio.run(Run(options, console).execute())
    print_report(result, console)
    return 1 if result.discrepancies else 0


if __name__ == "__main__":
    sys.exit(main())
