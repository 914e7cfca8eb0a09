"""tradesim.logging: JSON lines carrying the bound correlation id, stdlib records included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tradesim.logging import configure_logging, get_logger


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    structlog.reset_defaults()
    get_logger("tradesim")  # back to routing through stdlib, as before the test


def test_json_lines_with_correlation_id(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "logs" / "tradesim.log"
    configure_logging(path)
    with structlog.contextvars.bound_contextvars(correlation_id="corr-9"):
        structlog.get_logger("tradesim.test").info("order intent", qty=5)
        logging.getLogger("tradesim.stdlib").warning("plain %s", "record")
    structlog.get_logger("tradesim.test").debug("not at info")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["event"], r.get("correlation_id"), r["level"]) for r in lines] == [
        ("order intent", "corr-9", "info"), ("plain record", "corr-9", "warning")]
    assert lines[0]["qty"] == 5 and lines[0]["logger"] == "tradesim.test" and "timestamp" in lines[0]
