"""One self-contained HTML file per run: sections of text, tables and embedded PNG figures.

No external URL anywhere (styles inline, figures as base64 data URIs), so the file opens the same
from a laptop, a CI artifact or an air-gapped share. Stages build the content; this module only
lays it out:

    report = HtmlReport("Run 2025-06-30", subtitle="model v3 vs baseline")
    section = report.section("Metrics", "AUC on the holdout snapshot.")
    section.table([{"model": "wide_deep", "auc": 0.81}], columns=["model", "auc"])
    section.figure(fig, caption="Calibration")          # a matplotlib Figure
    report.write(runs_dir / "report.html")
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
     color:#1d2733;background:#fff;line-height:1.45;padding:0 1rem}
h1{font-size:1.7rem;margin-bottom:.2rem;border-bottom:3px solid #2a6fb0;padding-bottom:.3rem}
h2{font-size:1.25rem;margin-top:2rem;color:#2a6fb0}
.subtitle,.generated{color:#5b6b7b;margin-top:0}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}
th,td{border:1px solid #c9d3dd;padding:.3rem .6rem;text-align:left}
th{background:#e8eff6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#f6f9fb}
figure{margin:1rem 1rem 1rem 0;display:inline-block;vertical-align:top}
figure img{max-width:100%;border:1px solid #dde3e9}
figcaption{color:#5b6b7b;font-size:.85rem}
nav ul{columns:2;padding-left:1.2rem}
p.note{background:#fff6dd;border-left:4px solid #e0a800;padding:.5rem .8rem}
p.warn{background:#fde8e8;border-left:4px solid #d62728;padding:.5rem .8rem}
"""


def _cell(value: Any, digits: int) -> tuple[str, bool]:
    """Cell text and whether it is numeric (right-aligned)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, int):
        return f"{value:,}", True
    if isinstance(value, float):
        return (f"{value:,.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"), True
    return html.escape(str(value)), False


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib Figure rendered to PNG bytes (closed afterwards: reports make many)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


@dataclass
class Section:
    title: str
    _parts: list[str] = field(default_factory=list)

    def paragraph(self, text: str) -> "Section":
        self._parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def note(self, text: str, warning: bool = False) -> "Section":
        """A highlighted remark: why something is missing (or, with warning=True, a problem)."""
        self._parts.append(f'<p class="{"warn" if warning else "note"}">{html.escape(text)}</p>')
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
              digits: int = 4, caption: str | None = None) -> "Section":
        """Rows as dicts; columns default to the keys in first-seen order."""
        if columns is None:
            columns = list(dict.fromkeys(key for row in rows for key in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = []
        for row in rows:
            cells = []
            for column in columns:
                text, numeric = _cell(row.get(column), digits)
                cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        return self

    def image(self, png: bytes, caption: str = "", alt: str | None = None) -> "Section":
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("image() takes PNG bytes")
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img alt="{html.escape(alt or caption or self.title)}" '
                           f'src="data:image/png;base64,{data}">{cap}</figure>')
        return self

    def figure(self, fig: Any, caption: str = "", dpi: int = 110) -> "Section":
        """Embeds a matplotlib Figure (and closes it)."""
        return self.image(figure_png(fig, dpi), caption)

    def html(self, anchor: str) -> str:
        return f'<section id="{anchor}"><h2>{html.escape(self.title)}</h2>{"".join(self._parts)}</section>'


@dataclass
class HtmlReport:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str, text: str | None = None) -> Section:
        section = Section(title)
        if text:
            section.paragraph(text)
        self.sections.append(section)
        return section

    def render(self, generated_at: dt.datetime | None = None) -> str:
        stamp = (generated_at or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
        anchors = [f"s{i}" for i in range(len(self.sections))]
        toc = "".join(f'<li><a href="#{a}">{html.escape(s.title)}</a></li>'
                      for a, s in zip(anchors, self.sections))
        subtitle = f'<p class="subtitle">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        body = "".join(s.html(a) for a, s in zip(anchors, self.sections))
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{subtitle}<p class=\"generated\">Generated {stamp}</p>"
            f"<nav><ul>{toc}</ul></nav>{body}</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Writes the file atomically (a reader never sees half a report)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        tmp.replace(path)
        return path
