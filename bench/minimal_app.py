"""The baseline for HTTP benchmarks: the least a FastAPI endpoint can do with a JSON body."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.post("/orders", status_code=201)
async def create(body: dict) -> dict:
    return {"order_id": "o-1", "customer_id": body.get("customer_id")}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
