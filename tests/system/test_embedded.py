"""The embedded system end to end: order → compliance → risk → venue → trade → positions, and restarts
(clean and SIGKILL) that lose nothing that was acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from tests.support.config import quiet_config
from tradesim.domain import OrderStatus, Side
from tradesim.services.accounts.messages import AccountReply, GetAccount
from tradesim.services.config import SystemConfig
from tradesim.services.oms.messages import GetOrderRequest, OrderReply, OrderRequest
from tradesim.services.system import System
from tradesim.services.venue.messages import BookReply, BookRequest

ROOT = Path(__file__).resolve().parent.parent.parent


def config_for(data_dir: Path) -> SystemConfig:
    return quiet_config(data_dir)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    s = System(config_for(tmp_path))
    await s.start()
    yield s
    await s.stop()


async def order(system: System, account: str, side: Side, price: str, qty: int, cid: str) -> OrderReply:
    ticks = system.config.instrument("AAPL.SIM").to_ticks(Decimal(price))
    reply = await system.bus.request("rpc.oms.submit", OrderRequest(
        account=account, symbol="AAPL.SIM", side=side, qty=qty, price=ticks, client_order_id=cid), timeout=5)
    assert isinstance(reply, OrderReply), reply
    return reply


async def account(system: System, name: str) -> AccountReply:
    reply = await system.bus.request("rpc.accounts.get", GetAccount(account=name), timeout=5)
    assert isinstance(reply, AccountReply), reply
    return reply


async def test_an_order_flows_through_every_service_into_positions(system: System) -> None:
    await order(system, "mm1", Side.SELL, "190.00", 100, "s1")
    reply = await order(system, "alice", Side.BUY, "190.05", 40, "b1")
    assert reply.order.status is OrderStatus.FILLED
    assert [(t.price, t.qty) for t in reply.trades] == [(19000, 40)]
    assert system.accounts is not None
    await system.accounts.wait_for_seq(reply.trades[-1].seq)
    alice = (await account(system, "alice")).account
    fee = Decimal("190.00") * 40 * Decimal("0.3") / 10_000  # taker, 0.3 bps
    assert alice.cash == Decimal(1_000_000) - Decimal("7600.00") - fee
    assert [(p.symbol, p.qty) for p in alice.positions] == [("AAPL.SIM", 40)]
    mm1 = (await account(system, "mm1")).account
    assert [(p.symbol, p.qty) for p in mm1.positions] == [("AAPL.SIM", -40)]


async def test_compliance_refusal_is_kept_as_rejected(system: System) -> None:
    # fatima's sharia pack forbids short selling.
    reply = await order(system, "fatima", Side.SELL, "190.00", 10, "short1")
    assert reply.order.status is OrderStatus.REJECTED
    assert reply.order.reason == "sharia_short_sale"
    again = await system.bus.request("rpc.oms.get_order", GetOrderRequest(account="fatima",
                                                                          client_order_id="short1"))
    assert isinstance(again, OrderReply) and again.order.status is OrderStatus.REJECTED


async def test_clean_restart_continues_where_it_stopped(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    first = System(config)
    await first.start()
    await order(first, "mm1", Side.SELL, "190.00", 100, "s1")
    await order(first, "alice", Side.BUY, "190.00", 30, "b1")
    rejected = await order(first, "fatima", Side.SELL, "190.00", 10, "short1")
    assert rejected.order.status is OrderStatus.REJECTED
    assert first.venue is not None
    state = first.venue.engine.state_hash()
    before = (await account(first, "alice")).account
    await first.stop()

    second = System(config.with_settings(bus=f"memory://{uuid.uuid4().hex}"))
    await second.start()
    try:
        assert second.venue is not None and second.venue.engine.state_hash() == state
        assert (await account(second, "alice")).account == before
        kept = await second.bus.request("rpc.oms.get_order", GetOrderRequest(account="fatima",
                                                                             client_order_id="short1"))
        assert isinstance(kept, OrderReply) and kept.order.reason == "sharia_short_sale"
        resting = await second.bus.request("rpc.oms.get_order", GetOrderRequest(account="mm1",
                                                                               client_order_id="s1"))
        assert isinstance(resting, OrderReply) and resting.order.leaves_qty == 70
        # trading goes on against the recovered book
        more = await order(second, "bob", Side.BUY, "190.00", 70, "b2")
        assert more.order.status is OrderStatus.FILLED
        book = await second.bus.request("rpc.venue.book", BookRequest(symbol="AAPL.SIM"))
        assert isinstance(book, BookReply) and book.asks == []
    finally:
        await second.stop()


async def test_idempotent_retry_through_the_system(system: System) -> None:
    await order(system, "mm1", Side.SELL, "190.00", 100, "s1")
    first = await order(system, "alice", Side.BUY, "190.00", 10, "same")
    retry = await order(system, "alice", Side.BUY, "190.00", 10, "same")
    assert retry.order.order_id == first.order.order_id
    book = await system.bus.request("rpc.venue.book", BookRequest(symbol="AAPL.SIM"))
    assert isinstance(book, BookReply) and book.asks == [(19000, 90, 1)]


def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """A process trading through the OMS is killed at a random moment; every acknowledged order is
    there after the restart, with the state the venue's journal gives it."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.system_writer", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    acked: list[tuple[str, str, str]] = []
    for line in proc.stdout:
        acked.append(tuple(line.split()))  # type: ignore[arg-type]
        if len(acked) >= 60:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(acked) >= 60

    result = subprocess.run([sys.executable, "-m", "tests.support.system_writer", str(tmp_path), "--check"], cwd=ROOT,
                            input="\n".join(" ".join(a) for a in acked), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = msgspec.json.decode(result.stdout)
    assert report["missing"] == [] and report["checked"] == len(acked)
