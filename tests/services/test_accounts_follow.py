"""Accounts and risk monitors in distributed mode (`follow=True`): they read the venue's event stream from its
start, so one started late (or before the stream exists) reaches the state of one that saw everything live,
and a replaying risk monitor publishes no alerts for the history."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.services.test_accounts_service import ACCOUNTS, INSTRUMENTS, tape, trade
from tradesim.bus import Bus, Delivery, open_bus, subjects
from tradesim.services.accounts.service import VENUE_EVENTS_STREAM, AccountsService
from tradesim.services.alerts import RiskAlert
from tradesim.services.risk.monitor import RiskMonitorService
from tradesim.services.risk.monitor_config import MonitorConfig


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    b = await open_bus(f"memory://follow-{uuid.uuid4().hex[:8]}")
    yield b
    await b.close()


async def venue_stream(bus: Bus) -> None:
    await bus.add_stream(VENUE_EVENTS_STREAM, [subjects.ORDERS_ALL, subjects.TRADES_ALL])


async def publish_trades(bus: Bus, seqs: range) -> None:
    for seq in seqs:
        t = trade(seq, 15000 + seq, 10 if seq % 2 else 3)
        await bus.publish(subjects.ORDERS_FILLED, t)
        await bus.publish(subjects.TRADES_EXECUTED, tape(t))


async def test_a_tracker_started_late_catches_up_to_the_live_one(bus: Bus) -> None:
    await venue_stream(bus)
    live = AccountsService(bus, INSTRUMENTS, ACCOUNTS, follow=True)
    await live.start()
    await publish_trades(bus, range(1, 21))
    await live.wait_for_seq(20)
    late = AccountsService(bus, INSTRUMENTS, ACCOUNTS, follow=True)
    await late.start()
    await late.wait_for_seq(20)
    assert late.follower is not None and late.follower.following
    await asyncio.wait_for(late.follower.caught_up.wait(), 5)
    assert late.state_hash() == live.state_hash() and late.replica.applied == 20
    await publish_trades(bus, range(21, 25))  # then both stay current
    await late.wait_for_seq(24)
    await live.wait_for_seq(24)
    assert late.state_hash() == live.state_hash()
    await late.stop()
    await live.stop()


async def test_a_tracker_started_before_the_venue_stream_follows_once_it_exists(bus: Bus) -> None:
    early = AccountsService(bus, INSTRUMENTS, ACCOUNTS, follow=True)
    await early.start()
    assert early.follower is not None and not early.follower.following
    await venue_stream(bus)
    await publish_trades(bus, range(1, 5))
    await early.wait_for_seq(4, timeout=10)  # the retry found the stream and read it from its start
    assert early.follower.following and early.replica.applied == 4
    await early.stop()


async def test_a_replaying_risk_monitor_publishes_no_alerts_for_history(bus: Bus) -> None:
    await venue_stream(bus)
    alerts: list[RiskAlert] = []

    async def collect(d: Delivery) -> None:
        if isinstance(d.data, RiskAlert):
            alerts.append(d.data)

    await bus.subscribe(subjects.RISK_ALERTS, collect)
    config = MonitorConfig(position_limits={"*": {"AAPL.SIM": 15}})  # alice goes over it: state alerts
    live = RiskMonitorService(bus, INSTRUMENTS, ACCOUNTS, config, follow=True)
    await live.start()
    await publish_trades(bus, range(1, 7))
    await live.wait_for_seq(6)
    published = live.alerts_published
    assert published > 0
    late = RiskMonitorService(bus, INSTRUMENTS, ACCOUNTS, config, follow=True)
    await late.start()
    await late.wait_for_seq(6)
    assert late.alerts_published == 0  # the history's alerts went out once, from the live monitor
    assert late.replica.state_hash() == live.replica.state_hash()
    assert {k: late.state(*k) for k in [("alice", "AAPL.SIM"), ("bob", "AAPL.SIM")]} == {
        k: live.state(*k) for k in [("alice", "AAPL.SIM"), ("bob", "AAPL.SIM")]}
    await late.stop()
    await live.stop()
