"""The README and the documentation site: the README's two commands are the ones CI runs, the
reference pages are what the schema says, and the site builds without a broken link."""

import os
import re
import subprocess
import sys
from pathlib import Path

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
    assert install_run in (DOCS / "getting-started.md").read_text()
    assert install_test in (DOCS / "getting-started.md").read_text()
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


def test_the_documentation_site_builds_strictly(tmp_path):
    # mkdocs and its theme come with the test extra (and the docs extra); a broken link fails the build
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
