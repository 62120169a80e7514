"""The console's dashboard under load: the server time of `GET /dashboard` (the page asks the
profiles and complaints services for segments, seasonality and complaint and survey stats at
once, then draws every chart) with profiles stored, beside `/healthz` of the console itself as
the same-run baseline. Profiles are real scorer documents (bench/profiles_http.py builds them).
First each peer call alone, one at a time (where a cold dashboard's time goes); the load then
mostly meets the console's short-lived copy of those answers (DASHBOARD_FRESH_FOR)."""

from __future__ import annotations

import asyncio
import os
import re
import time

import httpx

from services.stack.harness import start_console, start_platform

from .profiles_http import load, load_profiles
from .report import Row, percentile, show
from .stack import start_bench_stack

PROFILES = int(os.environ.get("BENCH_CONSOLE_PROFILES", 20_000))
REQUESTS = int(os.environ.get("BENCH_CONSOLE_REQUESTS", 200))


def signed_in_cookie(url: str, key: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text).group(1)
        answer = client.post("/signin", data={"csrf": token, "api_key": key, "next": "/dashboard"})
        assert answer.status_code == 303, answer.text
        return f"crm_console_session={answer.cookies['crm_console_session']}"


# What the dashboard asks its peers for (services/console/service.py ConsoleService.dashboard).
PEER_CALLS = (
    ("profiles", "/segments"),
    ("profiles", "/analytics/seasonality"),
    ("complaints", "/complaints/stats"),
    ("complaints", "/surveys/stats"),
)


def peer_times(platform: dict, key: str, rounds: int = 5) -> list[tuple[str, float]]:
    """Each of the dashboard's peer calls alone, one at a time: the median of `rounds`, in ms."""
    times = []
    for service, path in PEER_CALLS:
        with httpx.Client(
            base_url=platform[service].url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                answer = client.get(path)
                samples.append(time.perf_counter() - started)
                answer.raise_for_status()
        times.append((f"{service} {path}", percentile(samples, 50) * 1000))
    return times


def main() -> None:
    stack = start_bench_stack()
    platform = start_platform(
        stack, stack.workdir / "faust", CRM_POPULATION_SECONDS="60", CRM_SCORING_REVIEW_SECONDS="60"
    )
    console = start_console(stack, platform)
    try:
        profiles = platform["profiles"]
        seconds = load_profiles(stack.mongo_url, profiles.env["CRM_DB_PREFIX"] + "profiles", PROFILES)
        print(f"{PROFILES:,} profiles stored in {seconds:.1f} s")
        for name, ms in peer_times(platform, stack.keys["viewer"]):
            print(f"  {name} alone: p50 {ms:.0f} ms")
        headers = {"Cookie": signed_in_cookie(console.url, stack.keys["viewer"])}
        base_rate, base_lat = asyncio.run(load(console.url, ["/healthz"] * REQUESTS, headers))
        rate, lat = asyncio.run(load(console.url, ["/dashboard"] * REQUESTS, headers))
        rows = [
            Row("console_http", "GET /dashboard throughput", rate, "req/s", "/healthz", base_rate),
            Row(
                "console_http",
                "GET /dashboard p50 server time",
                percentile(lat, 50) * 1000,
                "ms",
                "/healthz",
                percentile(base_lat, 50) * 1000,
                higher_is_better=False,
            ),
            Row(
                "console_http",
                "GET /dashboard p99 server time",
                percentile(lat, 99) * 1000,
                "ms",
                "/healthz",
                percentile(base_lat, 99) * 1000,
                higher_is_better=False,
            ),
        ]
        show(f"Console dashboard: {PROFILES:,} profiles, {REQUESTS} requests, 16 concurrent", rows)
    finally:
        console.stop()
        for service in platform.values():
            service.stop()
        stack.stop()


if __name__ == "__main__":
    main()
