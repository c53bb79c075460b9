"""The README and the documentation site: the README's two commands are the ones CI runs, the
reference pages are what the schema says, and the site builds without a broken link."""

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bsbench.core.config import Config
from bsbench.core.fields import FIELD_NAMES, fields_markdown
from bsbench.docs import generated, leaves, rewrite

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def test_every_generated_block_of_the_docs_is_what_the_schema_and_conf_say_now():
    blocks = generated()
    pages = sorted(DOCS.rglob("*.md"))
    found = {name for page in pages for name in blocks if f"<!-- {name} -->" in page.read_text()}
    assert found == set(blocks), "a generated block has no page"
    stale = [str(p.relative_to(ROOT)) for p in pages if rewrite(p.read_text(), blocks) != p.read_text()]
    assert not stale, f"{stale} differ from the schema: run `python -m bsbench.docs`"


def test_the_configuration_reference_lists_every_setting_with_its_type_default_and_meaning():
    page = (DOCS / "configuration.md").read_text()
    for key, _, _ in leaves(Config):
        (row,) = [line for line in page.splitlines() if line.startswith(f"| `{key}` |")]
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 5 and cells[1] and cells[2] and cells[4], row  # type, default, meaning
    # a mode's own value beside the default, and the range beside the type
    assert "| `trainer.max_steps` | int, -1 or ≥ 1 | `-1` | throughput: `60`;" in page
    assert "| `data.num_workers` | int, ≥ 0 | `0` |" in page  # an interpolation shown as the value it gives


def test_the_result_fields_page_documents_exactly_the_schemas_fields():
    page = (DOCS / "outputs.md").read_text()
    assert fields_markdown() in page
    assert re.findall(r"^\| `(\w+)`", fields_markdown(), re.M)[0] == FIELD_NAMES[0]


def test_the_readme_is_a_landing_page_whose_two_commands_are_the_ones_ci_and_the_docs_run():
    readme = README.read_text()
    assert len(readme.splitlines()) <= 300
    commands = re.findall(r"^    (python -m venv .*)$", readme, re.M)
    install_run, install_test = commands
    assert install_run.endswith("pip install . && python -m bsbench -m 'batch_size=range(30,33)' experiment=smoke")
    assert install_test.endswith('pip install ".[test]" && python -m pytest')
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python -m pip install -q ".[test]"' in ci and "\npython -m pytest\n" in ci
    started = (DOCS / "getting-started.md").read_text()
    assert install_run in started and install_test in started
    # two commands, each installing the CPU build of torch inside the environment it creates (not the default
    # CUDA build of several GB, and not into whatever python the reader had)
    cpu = " && pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu && "
    for command in commands:
        bsbench = re.search(r' && pip install "?\.', command).start()
        assert command.index(". .venv/bin/activate") < command.index(cpu) <= bsbench
    # the smoke run's figures are one run's, the same on both pages
    job_lines = re.compile(r"^    job \d of 3: batch_size=.*$", re.M)
    assert len(job_lines.findall(readme)) == 3 and job_lines.findall(readme) == job_lines.findall(started)
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    # mkdocs and its theme come with the test extra (and the docs extra); a broken link fails the build
    built = tmp_path_factory.mktemp("docs") / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return built


def test_the_documentation_site_builds_strictly_and_shows_the_settings_as_written(site):
    page = (site / "configuration" / "index.html").read_text()
    # what the generator writes outside code reads as written: a `<name>` is no HTML tag, a `_target_` no
    # emphasis, so `+callbacks.lr._target_=...` can be copied from the page
    assert "+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor" in page
    assert "timm:&lt;name&gt;" in page and "resume=&lt;its directory&gt;" in page
    assert "<em>target</em>" not in page and "<name>" not in page


LAYOUT = """<script>
window.addEventListener("load", () => {
  const content = document.querySelector(".md-content__inner").getBoundingClientRect();
  const cut = [], broken = [];
  document.querySelectorAll(".md-typeset table").forEach((table, i) => {
    const wrap = table.closest(".md-typeset__table") || table.parentElement;
    if (table.getBoundingClientRect().right > content.right + 1 || wrap.scrollWidth > wrap.clientWidth + 1) cut.push(i);
  });
  document.querySelectorAll(".md-typeset table td:first-child code").forEach(code => {
    if (code.getClientRects().length > 1) broken.push(code.textContent);
  });
  document.body.setAttribute("data-layout", JSON.stringify({cut, broken}));
});
</script></body>"""


def test_the_configuration_reference_fits_a_laptops_screen(site, browser, tmp_path):
    # at 1280 px, every table of the settings within the page (no column cut off, no sideways scroll), every
    # key on one line (not "batch_siz e")
    page = site / "configuration" / "index.html"
    page.write_text(page.read_text().replace("</body>", LAYOUT))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
                           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'data-layout="([^"]*)"', proc.stdout)
    assert found, "the page's layout was not measured"
    layout = json.loads(html.unescape(found.group(1)))
    assert layout == {"cut": [], "broken": []}
