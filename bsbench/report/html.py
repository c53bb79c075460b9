"""report.html: the report as one self-contained page to share (no folder, no network): the summary and
the verdict (bsbench's own markdown, converted here: headings, paragraphs, lists, tables, code), the
plots embedded as data URIs, and what differs between the rows and what they share."""

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.9em; background: #f4f4f4; }
pre { padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; height: auto; border: 1px solid #e5e5e5; margin: 0.5em 0; }
h1 { font-size: 1.5em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h2 { font-size: 1.25em; }
details { margin: 1em 0; }
"""


def _inline(text: str) -> str:
    """Escaped text with bsbench's inline markdown: `code`, **bold**, *emphasis*, [text](link)."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part)
        part = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)",
                      lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', part)
        out.append(part)
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def markdown_html(text: str) -> str:
    """The markdown bsbench writes (summary.md, verdict.md, tune.md) as HTML."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            out.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1:end]))}</code></pre>")
            i = end + 1
        elif re.match(r"#{1,6} ", line):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [_cells(row) for row in block if not re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)+\s*", row.strip())]
            head, body = rows[0], rows[1:]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
                       + "</tbody></table>")
        elif re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                items.append(re.sub(r"^\s*[-*] ", "", lines[i]))
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>")
        elif not line.strip():
            i += 1
        else:
            paragraph = []
            while i < len(lines) and lines[i].strip() and not re.match(r"(#{1,6} |\||```|\s*[-*] )", lines[i]):
                paragraph.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
    return "\n".join(out)


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def differences_html(labels: dict[str, str], shared: dict) -> str:
    """What differs between the report's rows (each group's label) and, folded, what they all share."""
    named = [label for label in dict.fromkeys(labels.values()) if label]
    parts = ["<h1>What differs</h1>"]
    if named:
        parts.append("<p>The rows differ in these settings (every other one is the same for all):</p><ul>"
                     + "".join(f"<li><code>{html.escape(label)}</code></li>" for label in named) + "</ul>")
    else:
        parts.append("<p>Every row has the same settings; only the batch size differs.</p>")
    if shared:
        parts.append("<details><summary>Settings every row shares</summary><table><thead><tr><th>setting</th>"
                     "<th>value</th></tr></thead><tbody>"
                     + "".join(f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(str(v))}</code></td>"
                               "</tr>" for k, v in sorted(shared.items()))
                     + "</tbody></table></details>")
    return "\n".join(parts)


def report_html(title: str, sections: list[str], plots: list[Path], differences: str) -> str:
    """The page: the markdown sections in order (summary first), the plots after the first, what differs last."""
    body = [markdown_html(sections[0]) if sections else ""]
    if plots:
        body.append("<h1>Plots</h1>" + "".join(image(p, p.stem.replace("_", " ")) for p in plots))
    body += [markdown_html(text) for text in sections[1:]]
    body.append(differences)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
