"""The report directory's HTML page: one self-contained file, the plots inlined as data URIs, no script.

Renders the sections `gfa_keras.reports.report_directory` lays out; imports nothing of gfa_keras.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

__all__ = ["render_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.2rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
h3 { font-size: 1rem; margin-bottom: 0.2rem; }
figure { margin: 1rem 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
"""


def _html_table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _html_figure(path, caption):
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{alt}">'
            f"<figcaption>{alt}</figcaption></figure>\n")


def render_page(title, sections, written) -> str:
    """The page's HTML text.

    Args:
        title: The report's title.
        sections: `[(heading, [(caption, header, rows)], [(png path, caption)])]`.
        written: When the report was written, for the page.

    Returns:
        The HTML text.
    """
    title = html.escape(title)
    # An empty data-URI icon stops the browser from requesting /favicon.ico.
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<title>{title}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{_STYLE}</style>\n</head>\n<body>\n",
        f"<h1>{title}</h1>\n<p>Written by gfa_keras on {html.escape(written)}.</p>\n",
    ]
    for heading, tables, shown in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>\n")
        for caption, header, rows in tables:
            if caption:
                parts.append(f"<h3>{html.escape(caption)}</h3>\n")
            parts.append(_html_table(header, rows))
        parts += [_html_figure(path, caption) for path, caption in shown]
    parts.append("</body>\n</html>\n")
    return "".join(parts)
