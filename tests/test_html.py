"""report.html: one self-contained page (tables, the plots embedded, the verdict, what differs), checked
as parsed HTML and as a real headless browser draws it."""

import base64
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from bsbench.core.results import write_json_atomic
from bsbench.report.write import write_report
from test_plots import result

PLOT_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's first series colour (C0)


class Page(HTMLParser):
    """The tags, images and table cells of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.cells, self.links, self._cell = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))
        if tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(self._cell.strip())
            self._cell = None


def a_sweep(directory: Path) -> None:
    """Two precisions, three batch sizes around a power of two, two runs each."""
    for i, (b, precision, k) in enumerate((b, p, k) for b in (31, 32, 33) for p in ("32-true", "bf16-mixed")
                                          for k in range(2)):
        r = result(b, 50.0 + b + 10 * (precision == "bf16-mixed") + k, repeat=k, precision=precision)
        r["run_dir"] = str(directory / f"job{i}")
        (directory / f"job{i}").mkdir(parents=True)
        write_json_atomic(directory / f"job{i}" / "results.json", r)


def test_report_html_holds_the_tables_the_plots_the_verdict_and_what_differs_in_one_file(tmp_path):
    a_sweep(tmp_path)
    text, _ = write_report([tmp_path])
    assert "report.html" in text.splitlines()[-1]
    page_text = (tmp_path / "report.html").read_text()
    page = Page()
    page.feed(page_text)
    assert page.tags.count("table") >= 2 and "samples/s (95% CI)" in page.cells  # the summary and the verdict
    assert "2^5, 8×4" in page.cells  # the verdict's table
    assert "Are powers of two (or multiples of 8) faster here?" in page_text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(page.images) == len(pngs) >= 2
    for src in page.images:  # embedded, each the PNG written beside it
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert any(data == p.read_bytes() for p in tmp_path.glob("*.png"))
    assert not page.links and not re.search(r'src="(?!data:)', page_text)  # nothing fetched from elsewhere
    differs = page_text[page_text.index("What differs"):]
    assert "precision=32-true" in differs and "precision=bf16-mixed" in differs
    assert "<code>model</code>" not in differs or "Settings every row shares" in differs


def test_report_html_opens_in_a_headless_browser_with_its_tables_and_images(tmp_path, browser):
    a_sweep(tmp_path)
    write_report([tmp_path])
    url = (tmp_path / "report.html").as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3600"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page()
    page.feed(dom.stdout)
    assert page.tags.count("table") >= 2 and len(page.images) >= 2 and "samples/s (95% CI)" in page.cells
    shot = tmp_path / "shot.png"
    proc = subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert (pixels < 0.9).any(axis=-1).mean() > 0.01, "the page drew nothing"  # text, tables, plots
    blue = np.abs(pixels - PLOT_BLUE).max(axis=-1) < 0.08
    assert blue.sum() > 200, "no plot drawn: the embedded images did not show"
