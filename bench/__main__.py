"""`make bench`: every benchmark, or those named: python -m bench contracts producer"""

from __future__ import annotations

import importlib
import sys

ALL = [
    "contracts",
    "producer",
    "outbox",
    "orders_http",
    "profiles_http",
    "reports_http",
    "cases_http",
    "desk_http",
    "console_http",
    "engagement",
    "scoring",
]


def main() -> None:
    for name in sys.argv[1:] or ALL:
        importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    main()
