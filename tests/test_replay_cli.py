"""`tradesim replay`: the example reproduces its expected output, and bad lines are reported, not fatal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tradesim.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "basic.jsonl"
EXPECTED = ROOT / "examples" / "basic.expected.jsonl"

INSTRUMENT = '{"op": "instrument", "symbol": "X.SIM", "tick_size": "0.05", "lot_size": 10}'


def replay(tmp_path: Path, *lines: str) -> list[dict[str, object]]:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["replay", "--quiet", "--input", str(source), "--output", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def new(cid: str, side: str, price: str | None, qty: int, **extra: object) -> str:
    line: dict[str, object] = {"op": "new", "account": "a" if side == "buy" else "b", "client_order_id": cid,
                               "symbol": "X.SIM", "side": side, "type": "limit" if price else "market",
                               "qty": qty, **extra}
    if price is not None:
        line["price"] = price
    return json.dumps(line)


def test_example_reproduces_expected_output_exactly(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = subprocess.run([sys.executable, "-m", "tradesim", "replay", "--input", str(EXAMPLE),
                             "--output", str(out)], capture_output=True, text=True, check=True)
    assert out.read_bytes() == EXPECTED.read_bytes()
    assert "23 commands -> 31 events (7 trades, 4 rejected)" in result.stderr


def test_example_to_stdout_matches_and_is_deterministic() -> None:
    runs = [subprocess.run([sys.executable, "-m", "tradesim", "replay", "-q", "--input", "-"],
                           input=EXAMPLE.read_bytes(), capture_output=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] == EXPECTED.read_bytes()


def test_events_have_type_seq_ts_and_consecutive_seq() -> None:
    events = [json.loads(line) for line in EXPECTED.read_text().splitlines()]
    seqs = [e["seq"] for e in events if e["type"] != "book"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all({"type", "seq", "ts"} <= e.keys() for e in events)


def test_prices_are_decimal_strings_at_tick_precision(tmp_path: Path) -> None:
    events = replay(tmp_path, INSTRUMENT, new("1", "sell", "100.05", 20), new("2", "buy", "100.10", 10),
                    '{"op": "book", "symbol": "X.SIM"}')
    assert events[0]["price"] == "100.05"
    assert events[2]["type"] == "trade" and events[2]["price"] == "100.05" and events[2]["qty"] == 10
    assert events[3] == {"type": "book", "seq": 3, "ts": 0, "symbol": "X.SIM", "bids": [],
                         "asks": [["100.05", 10, 1]]}


@pytest.mark.parametrize(
    ("line", "reason", "needle"),
    [
        ("{not json", "malformed", "malformed"),
        ('{"op": "teleport", "symbol": "X.SIM"}', "malformed", "teleport"),
        ('{"op": "cancel", "account": "a", "symbol": "X.SIM"}', "malformed", "client_order_id"),
        (new("c", "buy", "100.00", 10, colour="red"), "malformed", "colour"),
        (new("c", "buy", "100.00", 10, tif="FOREVER"), "malformed", "FOREVER"),
        (new("c", "buy", "100.00", 10.5), "malformed", "int"),
        (new("c", "buy", "100.02", 10), "off_tick", "not a multiple of tick 0.05"),
        (new("c", "buy", "lots", 10), "malformed", "decimal"),
        (new("c", "buy", "100.00", 15), "bad_qty", "lot"),
        (new("c", "buy", "100.00", 0), "bad_qty", "qty"),
        (new("c", "buy", "100.00", 10).replace("X.SIM", "Y.SIM"), "unknown_symbol", "Y.SIM"),
        (INSTRUMENT, "malformed", "already listed"),
        ('{"op": "instrument", "symbol": "NODOT", "tick_size": "0.01"}', "malformed", "CODE.VENUE"),
        ('{"op": "instrument", "symbol": "Z.SIM", "tick_size": "0"}', "malformed", "tick_size"),
        ('{"op": "cancel", "account": "a", "client_order_id": "nope", "symbol": "X.SIM"}', "unknown_order",
         "nope"),
    ],
)
def test_bad_line_is_rejected_with_line_number_and_the_run_goes_on(
    tmp_path: Path, line: str, reason: str, needle: str
) -> None:
    events = replay(tmp_path, INSTRUMENT, "# a comment", line, new("ok", "buy", "99.95", 10))
    rejected, accepted = events
    assert rejected["type"] == "rejected"
    assert rejected["reason"] == reason
    assert rejected["line"] == 3
    assert needle.lower() in str(rejected["message"]).lower()
    assert accepted["type"] == "accepted" and accepted["client_order_id"] == "ok"
    assert accepted["seq"] == rejected["seq"] + 1


def test_malformed_line_still_names_its_order(tmp_path: Path) -> None:
    events = replay(tmp_path, INSTRUMENT, new("c9", "buy", "100.00", 10, side_effect=True))
    assert events[0]["client_order_id"] == "c9" and events[0]["account"] == "a"


def test_time_may_not_go_backwards(tmp_path: Path) -> None:
    events = replay(tmp_path, INSTRUMENT, new("1", "buy", "99.00", 10, ts=50), new("2", "buy", "99.00", 10, ts=40))
    assert events[1]["reason"] == "malformed" and "back in time" in events[1]["message"]
    # a line without ts keeps the time of the line before
    events = replay(tmp_path, INSTRUMENT, new("1", "buy", "99.00", 10, ts=50), new("2", "buy", "99.00", 10))
    assert events[1]["ts"] == 50


def test_expire_op_ends_the_day(tmp_path: Path) -> None:
    events = replay(tmp_path, INSTRUMENT, new("1", "buy", "99.00", 10, tif="DAY"),
                    new("2", "buy", "98.00", 10, tif="GTD", expire_ts=500),
                    '{"op": "expire", "ts": 100}', '{"op": "expire", "ts": 200, "end_of_day": true}',
                    '{"op": "expire", "ts": 600}')
    assert [(e["type"], e["client_order_id"], e["ts"]) for e in events[2:]] == [
        ("expired", "1", 200), ("expired", "2", 600)]


def test_missing_input_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--input", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read input" in capsys.readouterr().err


def test_progress_is_reported_on_stderr(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    lines = [INSTRUMENT] + [new(str(i), "buy", "50.00", 10) for i in range(100_000)]
    source.write_text("\n".join(lines) + "\n")
    result = subprocess.run([sys.executable, "-m", "tradesim", "replay", "--input", str(source), "--output",
                             str(tmp_path / "out.jsonl")], capture_output=True, text=True, check=True)
    assert "replay: 100,000 lines" in result.stderr
