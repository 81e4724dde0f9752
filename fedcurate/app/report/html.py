"""The HTML pieces of a report page: cells, tables, paragraphs, embedded images, the page itself.

    body = para("Two sites.") + table(["site", "kept"], [["a", 3], ["b", 4]], ["a", "b"])
    body += img(png, "Bar chart of kept samples per site")   # a PNG embedded as a base64 data URI
    text = page("fedcurate run report: demo", body)        # one self-contained HTML document

Every value is escaped; cells are formatted by `fmt` (n/a, integers, 4 significant digits). No script,
nothing fetched: the page is one file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedcurate.app.report.plots import data_uri


def fmt(v: Any) -> str:
    """A cell: n/a for missing or NaN, integers as they are, floats to 4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(v)
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    if isinstance(v, list | tuple):
        return ", ".join(fmt(x) for x in v)
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], row_sites: Sequence[str] | None = None) -> str:
    """An HTML table; `row_sites` tags each row with data-site (tests and readers can count sites)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        tag = f' data-site="{html.escape(row_sites[i])}"' if row_sites and row_sites[i] else ""
        body.append(f"<tr{tag}>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def para(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def not_run(reason: str) -> str:
    return f'<p class="not-run">not run: {html.escape(reason)}</p>'


def img(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}">'


CSS = """body{font-family:sans-serif;margin:2em auto;max-width:1250px;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:.2em .6em;text-align:right}
th{background:#eee}td:first-child{text-align:left}img{max-width:100%;display:block;margin:.6em 0}
.not-run{color:#777;font-style:italic}nav a{margin-right:1em}section{border-top:1px solid #ddd}"""


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
