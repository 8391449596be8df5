"""The operations console's presentation: Jinja2 templates, static assets (the vendored uPlot and
the trend chart drawing on it) and view models that shape catalog records for them.

The routes live in recoverctl/service/console.py; the static drill report (drill/report.py)
inlines the same chart assets, read through `chart_assets()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
UPLOT_DIR = STATIC_DIR / "vendor" / "uplot"


@dataclass(frozen=True)
class ChartAssets:
    """The JavaScript and CSS that draw trend charts, to inline into a self-contained page."""

    js: str
    css: str


def chart_assets() -> ChartAssets:
    """Return uPlot and the trend chart code as text (read from the package data)."""
    js = (UPLOT_DIR / "uPlot.iife.min.js").read_text() + "\n" + (STATIC_DIR / "trend.js").read_text()
    css = (UPLOT_DIR / "uPlot.min.css").read_text() + "\n" + (STATIC_DIR / "trend.css").read_text()
    return ChartAssets(js, css)
