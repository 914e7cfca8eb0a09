"""Crash-test driver for the embedded system: trades through the OMS and prints each acknowledged order
(`account client_order_id status`) — or, with --check, restarts and verifies the acknowledged list read
from stdin."""

from __future__ import annotations

import asyncio
import random
import sys

import msgspec

from tests.support.config import quiet_config
from tradesim.domain import OrderStatus, Side
from tradesim.services.oms.messages import GetOrderRequest, OrderReply, OrderRequest
from tradesim.services.system import System


async def write(data_dir: str) -> None:
    config = quiet_config(data_dir, snapshot_every=25)
    system = System(config)
    await system.start()
    rng = random.Random()
    n = 0

    async def one(i: int) -> None:
        account = rng.choice(["mm1", "bob"])
        side = Side.BUY if account == "bob" else Side.SELL
        price = 19000 + rng.randint(-3, 3)
        reply = await system.bus.request("rpc.oms.submit", OrderRequest(
            account=account, symbol="AAPL.SIM", side=side, qty=rng.randint(1, 20), price=price,
            client_order_id=f"c{i}"), timeout=10)
        assert isinstance(reply, OrderReply), reply
        print(account, f"c{i}", reply.order.status.value, flush=True)

    while True:  # until killed
        await asyncio.gather(*(one(n + k) for k in range(8)))
        n += 8


async def check(data_dir: str) -> None:
    acked = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    config = quiet_config(data_dir)
    system = System(config)
    await system.start()
    missing = []
    try:
        for account, cid, status in acked:
            reply = await system.bus.request("rpc.oms.get_order", GetOrderRequest(account=account,
                                                                                 client_order_id=cid))
            if not isinstance(reply, OrderReply):
                missing.append([account, cid, "unknown"])
            elif status != "rejected" and reply.order.status is OrderStatus.REJECTED:
                missing.append([account, cid, reply.order.status.value])
    finally:
        await system.stop()
    print(msgspec.json.encode({"checked": len(acked), "missing": missing}).decode())


if __name__ == "__main__":
    target = sys.argv[1]
    asyncio.run(check(target) if "--check" in sys.argv else write(target))
