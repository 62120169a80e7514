"""The embedded stack as every benchmark runs it: the database's files in RAM (`/dev/shm`),
or on disk with BENCH_STORAGE=disk.

Why RAM: the embedded broker keeps its log in memory in every setting, and the benchmarks
measure the software, not this machine's virtual disk. On that disk, replaying the scorer's
own profile writes kept nx-27017 busy only 0.76 of the wall time (7 % of the machine in I/O
wait, write-back of the SQLite files), against 0.94 on `/dev/shm`. Such a stall lands on
paths bound by write throughput and hardly on paths bound by one request's latency, so it
would tilt every same-run ratio between the two. `make run` keeps its data on disk."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from services.stack.harness import Stack, start_stack

RAM = Path("/dev/shm")
STORAGE = "disk" if os.environ.get("BENCH_STORAGE") == "disk" or not RAM.is_dir() else "ram"
STORAGE_NOTE = {"ram": "database files in RAM", "disk": "database files on disk"}[STORAGE]


def start_bench_stack() -> Stack:
    if STORAGE == "disk":
        return start_stack()
    database_dir = Path(tempfile.mkdtemp(prefix="crm-bench-", dir=RAM))
    # After `Stack.stop()` in the benchmark's own `finally`; RAM is not left holding a database.
    atexit.register(shutil.rmtree, database_dir, ignore_errors=True)
    return start_stack(database_dir=database_dir)
