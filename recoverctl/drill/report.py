"""Drill reports: Markdown, self-contained HTML (inline SVG RTO/RPO chart, no network) and JSON."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from recoverctl.drill.scoring import human_duration


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
            f"{rehash['files_checked']} files, {rehash.get('bytes_checked')} bytes, "
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
        ("bytes restored", str(drill.get("bytes") if drill.get("bytes") is not None else "-")),
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


def svg_chart(history: list[dict[str, Any]], width: int = 720, height: int = 260) -> str:
    """Return an inline SVG plotting RTO and RPO per drill (seconds, log-free linear axis) with targets."""
    pad_l, pad_r, pad_t, pad_b = 64, 16, 24, 40
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [
        v
        for h in history
        for v in (h.get("rto_s"), h.get("rpo_s"), h.get("rto_target_s"), h.get("rpo_target_s"))
        if v is not None
    ]
    top = max(values, default=1.0) * 1.1 or 1.0
    n = len(history)

    def x(i: int) -> float:
        return pad_l + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return pad_t + plot_h - plot_h * (v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="RTO and RPO per drill">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        v = top * frac
        parts.append(
            f'<text x="{pad_l - 6}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">'
            f"{html.escape(human_duration(v))}</text>"
        )
    for key, colour, dash in (
        ("rto_target_s", "#1f77b4", "6,4"),
        ("rpo_target_s", "#d62728", "6,4"),
    ):
        line = [(x(i), y(h[key])) for i, h in enumerate(history) if h.get(key) is not None]
        if line:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in line)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-dasharray="{dash}" '
                f'stroke-width="1.5"><title>{key.replace("_s", "")}</title></polyline>'
            )
    for key, colour in (("rto_s", "#1f77b4"), ("rpo_s", "#d62728")):
        pts = [(i, h) for i, h in enumerate(history) if h.get(key) is not None]
        if len(pts) > 1:
            path = " ".join(f"{x(i):.1f},{y(h[key]):.1f}" for i, h in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, h in pts:
            fill = colour if h.get("verdict") == "pass" else "#fff"
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(h[key]):.1f}" r="4" fill="{fill}" stroke="{colour}">'
                f"<title>#{h['id']} {key[:3].upper()} {html.escape(human_duration(h[key]))} "
                f"({html.escape(str(h.get('verdict')))})</title></circle>"
            )
    for i, h in enumerate(history):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - pad_b + 14}" font-size="10" '
            f'text-anchor="middle">#{h["id"]}</text>'
        )
    parts.append(
        f'<text x="{pad_l}" y="{height - 6}" font-size="11">'
        '<tspan fill="#1f77b4">● RTO</tspan>  <tspan fill="#d62728">● RPO</tspan>  '
        "dashed: targets · hollow: failed drill</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


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
{svg_chart(history)}
{log_html}
</body></html>
"""


def render_json(drill: dict[str, Any], history: list[dict[str, Any]]) -> str:
    return json.dumps({"drill": drill, "history": history}, indent=2, default=str) + "\n"


RENDERERS = {"md": render_markdown, "html": render_html, "json": render_json}
