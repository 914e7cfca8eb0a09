"""Structured logging: JSON lines via structlog (stdlib records too) carrying the bound correlation id.

`configure_logging` is called by `tradesim run`: JSON lines go to a file (default `<data_dir>/tradesim.log`,
`-` = stdout) so that stderr keeps its human-readable progress lines; warnings also reach stderr as text.
Code binds ids with `structlog.contextvars.bound_contextvars(correlation_id=...)`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import structlog

_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def get_logger(name: str) -> Any:
    """A structlog logger that goes through stdlib logging even if `configure_logging` never ran (a library
    must not print to stdout by itself): then records are plain `event key=value` text at their level."""
    if not structlog.is_configured():
        structlog.configure(
            processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.filter_by_level,
                        structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True)],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
    return structlog.get_logger(name)


def configure_logging(target: str | Path, *, level: int = logging.INFO, stderr_level: int = logging.WARNING) -> None:
    """Routes structlog and stdlib logging to JSON lines at `target` (a path or "-" for stdout)."""
    structlog.configure(
        processors=[*_PRE_CHAIN[:1], structlog.stdlib.filter_by_level, *_PRE_CHAIN[1:],
                    structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    json_formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_PRE_CHAIN,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer(sort_keys=True)])
    if str(target) == "-":
        json_handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        json_handler = logging.FileHandler(path, encoding="utf-8")
    json_handler.setFormatter(json_formatter)
    json_handler.setLevel(level)
    text = logging.StreamHandler(sys.stderr)
    text.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_PRE_CHAIN,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.dev.ConsoleRenderer(colors=False)]))
    text.setLevel(stderr_level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tradesim", False):
            root.removeHandler(handler)
            handler.close()
    for handler in (json_handler, text):
        handler._tradesim = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(level, stderr_level))
