"""The console's dashboard under load: the server time of `GET /dashboard` (the page asks the
profiles and complaints services for segments, seasonality and complaint and survey stats at
once, then draws every chart) with profiles stored, beside `/healthz` of the console itself as
the same-run baseline. Profiles are real scorer documents (bench/profiles_http.py builds them)."""

from __future__ import annotations

import asyncio
import os
import re

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
