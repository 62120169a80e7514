"""Further `crm` commands contributed by the services (replays, model checks)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
