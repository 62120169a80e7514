"""A service SIGKILLed inside a transaction on the real embedded database (issue 18): its
transaction must not stay open to swallow everything written after it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from services.common.mongo import blocking_client
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


def test_a_transaction_its_killed_client_left_open_is_rolled_back_and_later_writes_last(tmp_path):
    port = free_port()
    database = mongo_child(port, tmp_path / "mongo", tmp_path / "logs")
    database.start()
    env = {"CRM_MONGO_URL": f"mongodb://127.0.0.1:{port}", "CRM_DATA_DIR": str(tmp_path / "state")}
    try:
        database.wait_ready()
        service = subprocess.Popen(
            [sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE, env={**os.environ, **env}
        )
        assert service.stdout.readline().strip() == b"inside"
        service.kill()
        service.wait(10)

        # The service restarts (its handle opens) and writes again, as the launcher would have it.
        restarted = subprocess.run(
            [sys.executable, "-c", RESTARTED], env={**os.environ, **env}, capture_output=True, timeout=60
        )
        assert restarted.returncode == 0, restarted.stderr.decode()[-2000:]
        client = blocking_client(env["CRM_MONGO_URL"])
        orders = client["crm_orders"]["orders"]
        assert {d["_id"] for d in orders.find({})} == {"after-restart"}  # the half-done write is gone
        client.close()

        database.kill()  # the database crashes: what it acknowledged must still be there
        database.start()
        database.wait_ready()
        client = blocking_client(env["CRM_MONGO_URL"])
        assert {d["_id"] for d in client["crm_orders"]["orders"].find({})} == {"after-restart"}
        client.close()
    finally:
        database.kill()


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
