"""One explanation record (`record.row_record`) as a self-contained HTML page — inline CSS, no external assets,
one small inline script — and an index page linking the rows: what a reviewer opens without Python.

Each message is a `div.msg` (`data-index`, `data-contribution`) shaded by its contribution: red toward the
positive class (the class `score` is about), blue away from it, the opacity proportional to |value| / the row's
largest |value| over messages and facts (one scale per page). The inline script writes each message's box (`data-rect`: left, top, width, height in CSS
pixels) into the DOM, so a headless browser's `--dump-dom` tells a test where to look in its screenshot.
"""
from __future__ import annotations

import html
from typing import Any

RED, BLUE = (220, 38, 38), (37, 99, 235)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; max-width: 900px; color: #111; background: #fff; }
h1 { font-size: 20px; } .facts td, .facts th { padding: 2px 10px; text-align: left; }
.summary { margin: 8px 0 16px; } .summary b { font-size: 18px; }
.msg { margin: 8px 0; padding: 10px 12px; border: 1px solid #ddd; border-radius: 6px; }
.role { font-weight: 600; margin-right: 8px; } .value { float: right; font-family: monospace; color: #333; }
.note { color: #555; font-size: 13px; }
"""
SCRIPT = """
for (const el of document.querySelectorAll('.msg')) {
  const r = el.getBoundingClientRect();
  el.setAttribute('data-rect', [r.left, r.top + window.scrollY, r.width, r.height].map(Math.round).join(','));
}
"""


def shade(value: float, largest: float) -> str:
    """CSS background for a contribution: red (> 0) or blue (< 0), opacity |value| / largest (at most 0.85)."""
    if largest <= 0 or value == 0:
        return "transparent"
    r, g, b = RED if value > 0 else BLUE
    return f"rgba({r},{g},{b},{0.85 * min(1.0, abs(value) / largest):.3f})"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _method(method: dict) -> str:
    if method["method"] == "sampled":
        return f"sampled, {method['permutations']} permutations, largest standard error {method['max_stderr']:.3g}"
    if method["method"] == "occlusion":
        return f"occlusion, interaction remainder {method['remainder']:+.3g} shared equally"
    return method["method"]


def render_page(record: dict, id_column: str, title: str = "bsmfusion explanation") -> str:
    """The page of one row: score, decision, the three parts of the score, the thread shaded, the top facts."""
    esc = html.escape
    if record.get("error"):
        body = f"<p>row {esc(str(record.get(id_column)))} could not be scored: {esc(record['error'])}</p>"
        return f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title></head><body>{body}</body></html>"
    messages = record["messages"]
    largest = max((abs(item["contribution"]) for item in [*messages, *record["features"]]), default=0.0)
    thread = "\n".join(
        f"<div class='msg' data-index='{m['index']}' data-contribution='{m['contribution']:.6g}' "
        f"style='background:{shade(m['contribution'], largest)}'><span class='role'>{esc(m['role'] or '—')}</span>"
        f"{esc(m['text'])}<span class='value'>{m['contribution']:+.3f}</span></div>" for m in messages)
    features = sorted(record["features"], key=lambda f: -abs(f["contribution"]))
    facts = "\n".join(
        f"<tr style='background:{shade(f['contribution'], largest)}'><td>{esc(f['column'])}</td>"
        f"<td>{esc(_value(f['value']))}</td><td>{f['contribution']:+.3f}</td></tr>" for f in features)
    head = (f"<div class='summary'>{esc(id_column)} <b>{esc(str(record[id_column]))}</b> · P({esc(str(record['score_class']))}) "
            f"<b>{record['score']:.3f}</b> · decision <b>{esc(str(record['decision']))}</b></div>"
            f"<div class='note'>log-odds = baseline {record['baseline']:+.3f} + dialogue "
            f"{record['text_contribution']:+.3f} + facts {record['tab_contribution']:+.3f}. Red pushes toward "
            f"{esc(str(record['score_class']))}, blue away; each message's and fact's number is its share of the "
            f"dialogue's (facts') part (messages: {esc(_method(record['message_method']))}; facts: "
            f"{esc(_method(record['feature_method']))}).</div>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{STYLE}</style>"
            f"</head><body><h1>{esc(title)}</h1>{head}<h2>Thread</h2>{thread or '<p>(no messages)</p>'}"
            f"<h2>Facts</h2><table class='facts'><tr><th>column</th><th>value</th><th>contribution</th></tr>{facts}"
            f"</table><script>{SCRIPT}</script></body></html>")


def render_index(records: list[dict], pages: list[str], id_column: str) -> str:
    """A table of the rows (id, score, decision, top message) linking each row's page."""
    esc = html.escape
    rows = []
    for record, page in zip(records, pages):
        if record.get("error"):
            rows.append(f"<tr><td><a href='{esc(page)}'>{esc(str(record.get(id_column)))}</a></td>"
                        f"<td colspan='3'>{esc(record['error'])}</td></tr>")
            continue
        best = max(record["messages"], key=lambda m: abs(m["contribution"]), default=None)
        top = f"{esc(best['role'] or '')}: {esc(best['text'][:80])} ({best['contribution']:+.2f})" if best else ""
        rows.append(f"<tr><td><a href='{esc(page)}'>{esc(str(record[id_column]))}</a></td>"
                    f"<td>{record['score']:.3f}</td><td>{esc(str(record['decision']))}</td><td>{top}</td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>bsmfusion explanations</title>"
            f"<style>{STYLE} td, th {{ padding: 2px 10px; text-align: left; }}</style></head><body>"
            f"<h1>bsmfusion explanations</h1><table><tr><th>{esc(id_column)}</th><th>score</th><th>decision</th>"
            f"<th>top message</th></tr>{''.join(rows)}</table></body></html>")


def write_report(records: list[dict], out, id_column: str) -> list[str]:
    """`out/explanations.jsonl` (one record a line, strict JSON), `out/rows/row-<n>.html` per row and
    `out/index.html`; returns the page paths relative to `out`."""
    import json
    from pathlib import Path

    out = Path(out)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    with open(out / "explanations.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    pages = []
    for n, record in enumerate(records):
        page = f"rows/row-{n}.html"
        title = f"{id_column} {record.get(id_column)}"
        (out / page).write_text(render_page(record, id_column, title), encoding="utf-8")
        pages.append(page)
    (out / "index.html").write_text(render_index(records, pages, id_column), encoding="utf-8")
    return pages
