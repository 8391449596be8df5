"""Drill reports: Markdown, self-contained HTML and JSON.

The HTML report draws its RTO/RPO trend with the console's chart code (recoverctl/console: uPlot
and trend.js), inlined so the file needs no network and no server.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from recoverctl.console import chart_assets
from recoverctl.console.views import trend_payload
from recoverctl.units import human_duration, human_size


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _margin(value: float | None, target: float | None) -> str:
    if value is None or target is None:
        return "-"
    left = target - value
    pct = 100.0 * left / target if target else 0.0
    return f"{human_duration(left)} ({pct:.0f}% of target)"


def summary_rows(drill: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (label, value) lines every format shows."""
    # A file/volume drill has no server: it reports files re-hashed instead of a recovered LSN.
    details = drill.get("details") or {}
    rehash = details if "files_checked" in details else details.get("details") or {}
    if "files_checked" in rehash:
        recovered = (
            "re-hashed",
            f"{rehash['files_checked']} files, {human_size(rehash.get('bytes_checked'))}, "
            f"{rehash.get('mismatch_count')} mismatching",
        )
    else:
        recovered = (
            "recovered to",
            f"{_iso(drill.get('recovered_commit_ts'))} (LSN {drill.get('recovered_lsn') or '-'})",
        )
    return [
        ("verdict", str(drill["verdict"]).upper()),
        ("drill", f"#{drill['id']} {drill['name']} (source {drill['source']})"),
        ("started", _iso(drill.get("started_at"))),
        ("finished", _iso(drill.get("finished_at"))),
        ("snapshot", f"{drill.get('snapshot_id') or '-'} taken {_iso(drill.get('snapshot_time'))}"),
        ("recovery point", str(drill.get("recovery_point") or "-")),
        recovered,
        (
            "RTO",
            f"{human_duration(drill.get('rto_s'))} measured, "
            f"target {human_duration(drill.get('rto_target_s'))}, "
            f"margin {_margin(drill.get('rto_s'), drill.get('rto_target_s'))}",
        ),
        (
            "RPO",
            f"{human_duration(drill.get('rpo_s'))} measured ({drill.get('rpo_basis') or '-'}), target "
            f"{human_duration(drill.get('rpo_target_s'))}, margin "
            f"{_margin(drill.get('rpo_s'), drill.get('rpo_target_s'))}",
        ),
        ("bytes restored", human_size(drill.get("bytes"))),
        ("cold", "yes" if drill.get("cold") else "no"),
    ]


def _expected_actual(c: dict[str, Any]) -> tuple[str, str]:
    def show(v: Any) -> str:
        return "-" if v is None else (json.dumps(v) if not isinstance(v, str) else v)

    return show(c.get("expected")), show(c.get("actual"))


def render_markdown(drill: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """Given one drill and its history (oldest first), return a Markdown report."""
    out = [f"# Restore drill #{drill['id']}: {drill['name']} — {str(drill['verdict']).upper()}", ""]
    if drill.get("reason"):
        out += [f"**Reason:** {drill['reason']}", ""]
    out += ["| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in summary_rows(drill)]
    out += ["", "## Phases", "", "| phase | seconds |", "| --- | ---: |"]
    for name, secs in (drill.get("phases") or {}).items():
        out.append(f"| {name} | {secs:.3f} |")
    out += [
        "",
        "## Checks",
        "",
        "| ok | check | expected | actual | output |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in drill.get("checks") or []:
        exp, act = _expected_actual(c)
        output = str(c.get("output", "")).replace("\n", "<br>").replace("|", "\\|")
        out.append(f"| {'✔' if c['ok'] else '✘'} | {c['name']} | {exp} | {act} | {output} |")
    if not drill.get("checks"):
        out.append("| | (no checks ran) | | | |")
    if history:
        out += ["", "## History", "", "| # | started | verdict | RTO | RTO target | RPO | RPO target |"]
        out.append("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
        for h in history:
            out.append(
                f"| {h['id']} | {_iso(h['started_at'])} | {h['verdict']} | "
                f"{human_duration(h.get('rto_s'))} | "
                f"{human_duration(h.get('rto_target_s'))} | {human_duration(h.get('rpo_s'))} | "
                f"{human_duration(h.get('rpo_target_s'))} |"
            )
    log_tail = (drill.get("details") or {}).get("details", {}).get("log_tail")
    if log_tail:
        out += ["", "## Server log (tail)", "", "```", log_tail, "```"]
    return "\n".join(out) + "\n"


def trend_html(drill: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """Return the RTO/RPO trend and phase bar of `history` (oldest first) as the console draws
    them: the console's chart code and uPlot inlined, the data in a JSON block, and the numbers
    again in a table for readers without JavaScript."""
    assets = chart_assets()
    data = json.dumps(trend_payload(drill.get("source"), history, drill))
    # "</" cannot close the script element from inside the JSON.
    data = data.replace("</", "<\\/")
    rows = "\n".join(
        f"<tr><td>#{h['id']}</td><td>{html.escape(_iso(h.get('started_at')))}</td>"
        f"<td>{html.escape(str(h.get('verdict')))}</td>"
        f"<td>{human_duration(h.get('rto_s'))} / {human_duration(h.get('rto_target_s'))}</td>"
        f"<td>{human_duration(h.get('rpo_s'))} / {human_duration(h.get('rpo_target_s'))}</td></tr>"
        for h in history
    )
    return f"""<style>{assets.css}</style>
<script type="application/json" id="trend-data">{data}</script>
<div class="rc-trend" data-trend="trend-data" id="trend"></div>
<noscript><table><tr><th>drill</th><th>started</th><th>verdict</th><th>RTO / target</th>
<th>RPO / target</th></tr>{rows}</table></noscript>
<script>{assets.js}</script>"""


def render_html(drill: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """Given one drill and its history (oldest first), return a self-contained HTML page."""
    e = html.escape
    colour = {"pass": "#2ca02c", "fail": "#d62728"}.get(str(drill["verdict"]), "#ff7f0e")
    rows = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary_rows(drill))
    phases = "\n".join(
        f"<tr><td>{e(name)}</td><td class=num>{secs:.3f}</td></tr>"
        for name, secs in (drill.get("phases") or {}).items()
    )
    checks = []
    for c in drill.get("checks") or []:
        exp, act = _expected_actual(c)
        mark = "✔" if c["ok"] else "✘"
        checks.append(
            f"<tr class={'ok' if c['ok'] else 'bad'}><td>{mark}</td><td>{e(c['name'])}</td>"
            f"<td>{e(exp)}</td><td>{e(act)}</td><td><pre>{e(str(c.get('output', '')))}</pre></td></tr>"
        )
    reason = f"<p class=reason><b>Reason:</b> {e(drill['reason'])}</p>" if drill.get("reason") else ""
    log_tail = (drill.get("details") or {}).get("details", {}).get("log_tail")
    log_html = f"<h2>Server log (tail)</h2><pre>{e(log_tail)}</pre>" if log_tail else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Restore drill #{drill["id"]} {e(drill["name"])}: {e(str(drill["verdict"]))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
h1 span {{ color: #fff; background: {colour}; padding: 0 .4em; border-radius: 4px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; }} tr.bad td {{ background: #fdecea; }}
pre {{ margin: 0; white-space: pre-wrap; }}
.reason {{ background: #fdecea; padding: .5em; }}
</style></head><body>
<h1>Restore drill #{drill["id"]} {e(drill["name"])} <span>{e(str(drill["verdict"]).upper())}</span></h1>
{reason}
<table>{rows}</table>
<h2>Phases</h2><table><tr><th>phase</th><th>seconds</th></tr>{phases}</table>
<h2>Checks</h2><table><tr><th></th><th>check</th><th>expected</th><th>actual</th><th>output</th></tr>
{"".join(checks) or "<tr><td colspan=5>(no checks ran)</td></tr>"}</table>
<h2>RTO and RPO over time</h2>
{trend_html(drill, history)}
{log_html}
</body></html>
"""


def render_json(drill: dict[str, Any], history: list[dict[str, Any]]) -> str:
    return json.dumps({"drill": drill, "history": history}, indent=2, default=str) + "\n"


RENDERERS = {"md": render_markdown, "html": render_html, "json": render_json}
