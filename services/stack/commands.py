"""Further `crm` commands: replays of history through the services' real APIs, models, and the
dead letters (services/stack/deadletters.py)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from rich.console import Console

from services.common.settings import Settings
from services.stack.replay import replay_cdnow

console = Console()


def admin_key(data_dir: str) -> str:
    """CRM_API_KEY, or the admin key that `crm up` wrote."""
    if os.environ.get("CRM_API_KEY"):
        return os.environ["CRM_API_KEY"]
    keys = Path(data_dir) / "api-keys.txt"
    for line in keys.read_text().split():
        role, _, key = line.partition("=")
        if role == "admin":
            return key
    raise SystemExit(f"no admin key: set CRM_API_KEY or run `crm up` first (looked in {keys})")


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    if args.dataset != "cdnow":
        raise SystemExit("only the cdnow data set is known")
    until = date.fromisoformat(args.until) if args.until else None
    started = time.perf_counter()
    totals = replay_cdnow(args.orders_url or settings.url_of("orders"), admin_key(args.data_dir), until)
    elapsed = time.perf_counter() - started
    console.print(
        f"CDNOW{' until ' + args.until if args.until else ''}: {totals['accepted']} orders, "
        f"{totals['events']} events, {totals['duplicates']} already there, {totals['rejected']} rejected, "
        f"in {elapsed:.1f}s"
    )
    return 0 if totals["rejected"] == 0 else 1


def cmd_model_fit(args: argparse.Namespace, settings: Settings) -> int:
    """BG/NBD and Gamma-Gamma fitted on the CDNOW calibration summaries shipped in the
    lifetimes wheel (2,357 customers, weeks), printed as JSON."""
    import csv
    from importlib import metadata

    import orjson

    from services.scoring.model import fit_bgnbd, fit_gamma_gamma

    def table(name: str) -> dict[str, list[float]]:
        path = next(f for f in metadata.files("lifetimes") or [] if f.name == name).locate()
        with open(path) as handle:
            rows = list(csv.DictReader(handle))
        return {k: [float(r[k]) for r in rows] for k in rows[0] if k != "ID"}

    summary = table("cdnow_customers_summary.csv")
    bg = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
    spend = table("cdnow_customers_summary_with_transactions.csv")
    gg = fit_gamma_gamma(spend["x"], spend["zbar"])
    print(
        orjson.dumps(
            {
                "r": round(bg.r, 4),
                "alpha": round(bg.alpha, 4),
                "a": round(bg.a, 4),
                "b": round(bg.b, 4),
                "p": round(gg.p, 4),
                "q": round(gg.q, 4),
                "v": round(gg.v, 4),
                "customers": len(summary["frequency"]),
            }
        ).decode()
    )
    return 0


def cmd_model_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    if args.warnings:
        from services.scoring import warning_replay

        replayed = warning_replay.run(args.sample, log=lambda line: console.print(line))
        print(warning_replay.tables(replayed))
        return 0 if warning_replay.beats_baselines(replayed) else 1

    from services.scoring.evaluate import run

    result = run(log=lambda line: console.print(line))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    best = max(result["auc_recency"], result["auc_bgnbd_expected_holdout"])
    closer = abs(1 - result["ratio_90d"]) <= abs(1 - result["bgnbd_holdout_ratio"])
    return 0 if result["auc_churn_risk"] >= best and closer else 1


def _deadletter_filter(args: argparse.Namespace):
    from services.common.clock import SystemClock

    from .deadletters import make_filter

    try:
        return make_filter(SystemClock().now(), args.reason, args.topic, args.since, args.older_than)
    except ValueError as exc:
        raise SystemExit(f"crm deadletters: {exc}") from None


def _with_broker(run: Callable[[], int], settings: Settings) -> int:
    """A missing topic or an unreachable broker is said in one line, not a traceback."""
    from kafka.errors import KafkaError

    try:
        return run()
    except (LookupError, TimeoutError, KafkaError) as exc:
        raise SystemExit(f"crm deadletters ({settings.kafka_bootstrap}): {exc!s}") from None


def cmd_deadletters_list(args: argparse.Namespace, settings: Settings) -> int:
    from .deadletters import run_list

    chosen = _deadletter_filter(args)
    return _with_broker(lambda: run_list(settings, chosen, args.json, console), settings)


def cmd_deadletters_show(args: argparse.Namespace, settings: Settings) -> int:
    from .deadletters import run_show

    return _with_broker(lambda: run_show(settings, args.deadletter, console), settings)


def cmd_deadletters_replay(args: argparse.Namespace, settings: Settings) -> int:
    from .deadletters import run_replay

    chosen = _deadletter_filter(args)
    try:
        fix = Path(args.fix).read_bytes() if args.fix else None
    except OSError as exc:
        raise SystemExit(f"crm deadletters: --fix {args.fix}: {exc.strerror}") from None
    return _with_broker(
        lambda: run_replay(
            settings,
            args.deadletters,
            chosen,
            console,
            fix=fix,
            again=args.again,
            dry_run=args.dry_run,
            everything=args.all,
        ),
        settings,
    )


def _deadletter_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", help="reason containing this text (any case)")
    parser.add_argument("--topic", help="original topic, e.g. crm.orders.v1")
    parser.add_argument("--since", help="dead-lettered since: 30m, 2h, 7d, 1w ago, or an ISO date or time")
    parser.add_argument(
        "--older-than", help="dead-lettered before: 30m, 2h, 7d, 1w ago, or an ISO date or time"
    )


def register(sub: argparse._SubParsersAction) -> None:
    dead = sub.add_parser("deadletters", help="list, show and replay dead-lettered records")
    dead_sub = dead.add_subparsers(dest="deadletters_command", required=True)
    listing = dead_sub.add_parser("list", help="dead letters by reason, original topic and age")
    _deadletter_filter_options(listing)
    listing.add_argument("--json", action="store_true", help="the groups as JSON")
    listing.set_defaults(func=cmd_deadletters_list)
    show = dead_sub.add_parser("show", help="one dead letter: its headers and original bytes")
    show.add_argument("deadletter", help="partition:offset on the dead-letter topic (as `list` shows)")
    show.set_defaults(func=cmd_deadletters_show)
    replay_dead = dead_sub.add_parser(
        "replay", help="send chosen dead letters back to their original topic, validated first"
    )
    replay_dead.add_argument("deadletters", nargs="*", help="partition:offset of each (as `list` shows)")
    _deadletter_filter_options(replay_dead)
    replay_dead.add_argument("--all", action="store_true", help="every dead letter (when none is named)")
    replay_dead.add_argument(
        "--fix", help="a JSON file with the corrected event, sent instead of the original bytes (one record)"
    )
    replay_dead.add_argument("--again", action="store_true", help="also send dead letters replayed before")
    replay_dead.add_argument("--dry-run", action="store_true", help="say what would be sent; send nothing")
    replay_dead.set_defaults(func=cmd_deadletters_replay)

    model = sub.add_parser("model", help="customer-base models (BG/NBD, Gamma-Gamma)")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    fit = model_sub.add_parser("fit", help="fit the models and print their parameters as JSON")
    fit.add_argument("--cdnow", action="store_true", required=True, help="on the CDNOW calibration summary")
    fit.set_defaults(func=cmd_model_fit)
    evaluate = model_sub.add_parser("evaluate", help="replay CDNOW to 1997-09-30 and check the live profiles")
    evaluate.add_argument("--cdnow", action="store_true", required=True)
    evaluate.add_argument(
        "--warnings",
        action="store_true",
        help="replay CDNOW day by day through the scoring code: churn warnings against two baselines",
    )
    evaluate.add_argument("--sample", type=int, default=None, help="with --warnings: this many customers")
    evaluate.set_defaults(func=cmd_model_evaluate)

    replay = sub.add_parser("replay", help="load a historical data set through the services")
    replay.add_argument("dataset", choices=["cdnow"])
    replay.add_argument("--until", help="last day to load (YYYY-MM-DD)")
    replay.add_argument("--orders-url", default=None, help="orders service (default from CRM_ORDERS_PORT)")
    replay.add_argument("--data-dir", default=".crm", help="where `crm up` wrote the API keys")
    replay.set_defaults(func=cmd_replay)
