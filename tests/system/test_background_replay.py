"""A LOBSTER file as the background market: the replay runs inside the system and users trade against it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tradesim.domain import OrderStatus, Side
from tradesim.services.config import ConfigError, load_config
from tradesim.services.oms.messages import OrderReply, OrderRequest
from tradesim.services.system import System
from tradesim.services.venue.messages import BookReply, BookRequest

ROOT = Path(__file__).resolve().parent.parent.parent
MESSAGES = ROOT.parent / "shared" / "data" / "lobster" / "AMZN_2012-06-21_34200000_57600000_message_1.csv"


def config_text(messages: Path) -> str:
    return f"""
[[instruments]]
symbol = "AMZN.SIM"
tick_size = "0.01"
flags = ["shortable"]
reference_price = "223.80"

[[accounts]]
id = "alice"
cash = "1000000"
kind = "margin"

[[replays]]
symbol = "AMZN.SIM"
messages = "{messages}"
limit = 400
speed = 0
"""


async def test_users_trade_against_the_replayed_book(tmp_path: Path) -> None:
    path = tmp_path / "lobster.toml"
    path.write_text(config_text(MESSAGES))
    config = load_config(path, env={}).with_settings(data_dir=str(tmp_path / "data"),
                                                     bus=f"memory://{uuid.uuid4().hex}")
    system = System(config)
    await system.start()
    try:
        await asyncio.wait_for(asyncio.gather(*system._replay_tasks), timeout=60)
        stats = system.replays[0].stats
        assert stats.lines == 400 and stats.trades > 0 and stats.rejected == 0
        book = await system.bus.request("rpc.venue.book", BookRequest(symbol="AMZN.SIM", depth=1))
        assert isinstance(book, BookReply) and book.asks, "the replay left offers in the book"
        best_ask = book.asks[0][0]
        reply = await system.bus.request("rpc.oms.submit", OrderRequest(
            account="alice", symbol="AMZN.SIM", side=Side.BUY, qty=1, price=best_ask, client_order_id="lift"))
        assert isinstance(reply, OrderReply) and reply.order.status is OrderStatus.FILLED
        assert reply.trades[0].maker_account == "lobster" and reply.trades[0].price == best_ask
    finally:
        await system.stop()


def test_a_replay_of_a_missing_file_or_unlisted_symbol_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config_text(tmp_path / "nope.csv"))
    with pytest.raises(ConfigError, match="no LOBSTER message file"):
        load_config(path, env={})
    path.write_text(config_text(MESSAGES).replace('symbol = "AMZN.SIM"\nmessages', 'symbol = "X.SIM"\nmessages'))
    with pytest.raises(ConfigError, match=r"X\.SIM is not a listed instrument"):
        load_config(path, env={})
