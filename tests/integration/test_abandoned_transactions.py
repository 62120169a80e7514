"""A service SIGKILLed inside a transaction on the real embedded database (issue 18): its
transaction must not stay open to swallow everything written after it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from pymongo.errors import PyMongoError

from services.common.mongo import Mongo, blocking_client
from services.common.settings import Settings
from services.stack.embedded import free_port, mongo_child

# A service's write in a transaction that the kill interrupts before its commit.
INTERRUPTED = textwrap.dedent(
    """
    import asyncio
    from services.common.mongo import Mongo
    from services.common.settings import Settings

    async def main():
        mongo = await Mongo.open(Settings(), "orders")

        async def work(session):
            await mongo.db["orders"].insert_one({"_id": "half-done"}, session=session)
            print("inside", flush=True)
            await asyncio.sleep(60)

        await mongo.transaction(work)

    asyncio.run(main())
    """
)


@pytest.fixture
def database(tmp_path, monkeypatch):
    """A real embedded database on a free port, and the settings a service there reads."""
    port = free_port()
    child = mongo_child(port, tmp_path / "mongo", tmp_path / "logs")
    child.start()
    env = {"CRM_MONGO_URL": f"mongodb://127.0.0.1:{port}", "CRM_DATA_DIR": str(tmp_path / "state")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        child.wait_ready()
        yield child, env
    finally:
        child.kill()


def test_a_transaction_its_killed_client_left_open_is_rolled_back_and_later_writes_last(database):
    database, env = database
    service = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE, env=os.environ)
    assert service.stdout.readline().strip() == b"inside"
    service.kill()
    service.wait(10)

    # The service restarts (its handle opens) and writes again, as the launcher would have it.
    restarted = subprocess.run(
        [sys.executable, "-c", RESTARTED], env=os.environ, capture_output=True, timeout=60
    )
    assert restarted.returncode == 0, restarted.stderr.decode()[-2000:]
    assert written(env, "crm_orders", "orders") == {"after-restart"}  # the half-done write is gone

    database.kill()  # the database crashes: what it acknowledged must still be there
    database.start()
    database.wait_ready()
    assert written(env, "crm_orders", "orders") == {"after-restart"}


def written(env: dict[str, str], db: str, collection: str) -> set[str]:
    client = blocking_client(env["CRM_MONGO_URL"])
    try:
        return {d["_id"] for d in client[db][collection].find({})}
    finally:
        client.close()


RESTARTED = textwrap.dedent(
    """
    import asyncio
    from services.common.mongo import Mongo
    from services.common.settings import Settings

    async def main():
        mongo = await Mongo.open(Settings(), "orders")

        async def work(session):
            await mongo.db["orders"].insert_one({"_id": "after-restart"}, session=session)

        await mongo.transaction(work)
        mongo.close()

    asyncio.run(main())
    """
)


# A service whose transaction outlives its deadline and goes on writing, as a slow batch on the
# embedded server does: the driver gives up client-side and cannot send the abort in time.
TIMED_OUT = textwrap.dedent(
    """
    import asyncio
    from pymongo.errors import PyMongoError
    from services.common.mongo import Mongo
    from services.common.settings import Settings

    async def main():
        mongo = await Mongo.open(Settings(), "loyalty")
        mongo.timeout = 0.5

        async def too_slow(session):
            await mongo.db["ledger"].insert_one({"_id": "timed-out"}, session=session)
            await asyncio.sleep(1.0)  # past the deadline: the next operation fails client-side
            await mongo.db["ledger"].insert_one({"_id": "never"}, session=session)

        try:
            await mongo.transaction(too_slow)
        except PyMongoError as exc:
            assert exc.timeout, exc
        else:
            raise AssertionError("the transaction outlived its deadline and still committed")
        # Later writes of the same process, under sessions of their own (requests in flight
        # each hold one; a second handle has its own pool).
        later = await Mongo.open(Settings(), "loyalty")

        async def redeem(session):
            await later.db["ledger"].insert_one({"_id": "acknowledged"}, session=session)

        await later.transaction(redeem)
        await later.db["ledger"].insert_one({"_id": "acknowledged-alone"})
        print("written", flush=True)
        await asyncio.sleep(60)  # the process lives on: no restart ends its session

    asyncio.run(main())
    """
)


def test_writes_acknowledged_after_a_timed_out_transaction_survive_a_database_crash(database):
    database, env = database
    service = subprocess.Popen([sys.executable, "-c", TIMED_OUT], stdout=subprocess.PIPE, env=os.environ)
    try:
        assert service.stdout.readline().strip() == b"written"
        database.kill()  # the database crashes: what it acknowledged must still be there
        database.start()
        database.wait_ready()
        # The timed-out write is gone, the acknowledged ones stayed.
        assert written(env, "crm_loyalty", "ledger") == {"acknowledged", "acknowledged-alone"}
    finally:
        service.kill()
        service.wait(10)


def test_a_timed_out_transaction_is_not_committed_by_the_next_one_on_its_session(database):
    async def scenario() -> set[str]:
        mongo = await Mongo.open(Settings(), "loyalty")
        mongo.timeout = 0.5

        async def too_slow(session):
            await mongo.db["ledger"].insert_one({"_id": "timed-out"}, session=session)
            await asyncio.sleep(1.0)
            await mongo.db["ledger"].insert_one({"_id": "never"}, session=session)

        with pytest.raises(PyMongoError):
            await mongo.transaction(too_slow)
        mongo.timeout = 10.0

        async def redeem(session):  # the driver hands it the same session again
            await mongo.db["ledger"].insert_one({"_id": "acknowledged"}, session=session)

        await mongo.transaction(redeem)
        found = {d["_id"] async for d in mongo.db["ledger"].find({})}
        mongo.close()
        return found

    assert asyncio.run(scenario()) == {"acknowledged"}  # half of a failed transaction never lands
