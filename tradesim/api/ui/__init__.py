"""The web UI: Jinja2 templates, static files (our CSS/JS and vendored htmx and lightweight-charts), routes.

`create_app` registers `ROUTES` (pages at `/` and `/login`, htmx fragments under `/ui/`, files under
`/static/`) and `template_config()`; nothing here lives under `/api/`, so the API's JSON error shapes
are untouched.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from tradesim.api.ui.routes import ROUTES as PAGE_ROUTES

HERE: Final = Path(__file__).parent
TEMPLATES: Final = HERE / "templates"
STATIC: Final = HERE / "static"

ROUTES: Final[list[Any]] = [*PAGE_ROUTES, create_static_files_router(path="/static", directories=[STATIC],
                                                                     name="ui-static")]


def money(value: Decimal | None, places: int = 2) -> str:
    """Thousands separators and fixed places, as a trading screen shows money; an em dash for none."""
    if value is None:
        return "\u2014"
    return f"{value:,.{places}f}"


def hms(ts: int) -> str:
    """A nanosecond epoch timestamp as local HH:MM:SS (blotters show the time of day)."""
    return time.strftime("%H:%M:%S", time.localtime(ts / 1e9)) if ts else ""


def _filters(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(money=money, hms=hms)


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 over `templates/` with autoescaping (Litestar turns it on) and the `money`/`hms` filters."""
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_filters)
