"""The `crm` command: run, inspect and feed the platform."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from services.common.auth import ROLES
from services.common.kafka import broker_reachable, ensure_topics
from services.common.mongo import blocking_client
from services.common.settings import SERVICE_NAMES, Settings

console = Console()


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from .launcher import run_up

    return run_up(
        settings,
        Path(args.data_dir),
        demo=args.demo,
        broker_port=args.broker_port,
        mongo_port=args.mongo_port,
        demo_rate=args.demo_rate,
    )


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    if args.partitions:
        settings = settings.model_copy(update={"topic_partitions": args.partitions})
    result = ensure_topics(settings)
    table = Table("topic", "state")
    for name, state in sorted(result.items()):
        table.add_row(name, state)
    console.print(table)
    return 0 if all(s in ("created", "exists") for s in result.values()) else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    table = Table("part", "address", "state")
    healthy = True
    broker_ok = broker_reachable(settings)
    table.add_row("kafka", settings.kafka_bootstrap, "reachable" if broker_ok else "[red]unreachable[/]")
    try:
        blocking_client(settings.mongo_url, serverSelectionTimeoutMS=1500).admin.command("ping")
        mongo_ok = True
    except Exception:  # noqa: BLE001
        mongo_ok = False
    table.add_row("mongodb", settings.mongo_url, "reachable" if mongo_ok else "[red]unreachable[/]")
    healthy &= broker_ok and mongo_ok
    for service in SERVICE_NAMES:
        url = settings.url_of(service)
        try:
            answer = httpx.get(f"{url}/readyz", timeout=2.0)
            state = (
                "ready"
                if answer.status_code == 200
                else f"[yellow]not ready[/] {answer.json().get('checks')}"
            )
            healthy &= answer.status_code == 200
        except httpx.HTTPError:
            state = "[dim]not running[/]"
        table.add_row(service, url, state)
    console.print(table)
    return 0 if healthy else 1


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Print each new key once (only its hash is stored) and write the hashed file."""
    from services.common.auth import new_key, write_keys_file

    keys = {role: new_key(role) for role in args.role or ["viewer", "agent", "admin"]}
    write_keys_file(Path(args.file), keys)
    for role, key in keys.items():
        print(f"{role}\t{key}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the embedded stack and every service")
    up.add_argument("--demo", action="store_true", help="also run the demo traffic generator")
    up.add_argument("--demo-rate", type=float, default=5.0, help="demo customers' actions per second")
    up.add_argument("--data-dir", default=".crm", help="where data, logs and API keys live (default .crm/)")
    up.add_argument("--broker-port", type=int, default=9092, help="embedded broker port")
    up.add_argument("--mongo-port", type=int, default=27017, help="embedded MongoDB-protocol server port")
    up.set_defaults(func=cmd_up)

    topics_cmd = sub.add_parser("topics", help="create the topics, or check they exist")
    topics_cmd.add_argument("--partitions", type=int, default=None)
    topics_cmd.set_defaults(func=cmd_topics)

    keys = sub.add_parser(
        "keys", help="create API keys (one per role given) and write their hashes to a key file"
    )
    keys.add_argument("file", help="the hashed key file to write (CRM_API_KEYS_FILE)")
    # People get their own keys from the staff service (POST /users/{id}/keys); these are the
    # first admin's and the role keys services and scripts present.
    keys.add_argument("--role", action="append", choices=list(ROLES), default=None)
    keys.set_defaults(func=cmd_keys)

    status = sub.add_parser("status", help="health of every part")
    status.set_defaults(func=cmd_status)

    from . import commands

    commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, Settings())


if __name__ == "__main__":
    sys.exit(main())
