"""The documentation's generated tables, from where each fact lives: every setting's type from the schema
(bsbench/core/config.py) and its range from bsbench/core/ranges.py, its default from the composed config, its meaning from the comments beside it
in conf/, what each mode sets from conf/mode/; every result field from bsbench/core/fields.py.

    python -m bsbench.docs          # rewrites the generated blocks of docs/*.md in place
    python -m bsbench.docs --check  # exits 1, naming the page, where a block differs

A block is the text between `<!-- name -->` and `<!-- /name -->` in a page; tests/test_docs.py
keeps every page's blocks equal to what this module generates, so the docs cannot drift."""

import argparse
import dataclasses
import re
import sys
import typing
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bsbench.core.config import Config
from bsbench.core.fields import fields_markdown, flatten
from bsbench.core.ranges import RANGES
from bsbench.job.groups import GROUPS, config_dir

DOCS = Path(__file__).resolve().parents[1] / "docs"
LIGHTNING_TRAINER = "https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-flags"
# the config groups and the file in each whose comments describe the group's keys
GROUP_FILES = {"model": "model/mobilenet_v3_large.yaml", "data": "data/cifar10.yaml", "trainer": "trainer/default.yaml"}
EXTRA_FILES = {"data": ("data/synthetic.yaml",)}  # keys only another option of the group sets
SECTIONS = tuple(GROUP_FILES)  # the config groups that are sections of the schema


def yaml_comments(path: Path) -> dict[str, str]:
    """{dotted key: its comment} for a YAML file of conf/: the `#` lines right above a key and the
    comment at the end of its line, joined. Lists (`defaults:`) and Hydra's own section are skipped."""
    found, stack, block, header = {}, [], [], True
    for raw in path.read_text().splitlines():
        line = raw.rstrip()
        text = line.strip()
        if not text or re.fullmatch(r"#\s*---.*---", text):  # a blank line or a divider ends a block
            block, header = [], False
            continue
        if text.startswith("#"):
            if not header:  # the comment a file opens with describes the file
                block.append(text.lstrip("#").strip())
            continue
        header = False
        indent = len(line) - len(line.lstrip())
        match = re.match(r"([A-Za-z_][\w]*):(.*)$", text)
        if not match or text.startswith("- "):
            block = []
            continue
        key, rest = match.groups()
        stack = [(i, k) for i, k in stack if i < indent]
        stack.append((indent, key))
        dotted = ".".join(k for _, k in stack)
        inline = rest.split(" #", 1)[1].strip() if " #" in rest else ""
        found[dotted] = " ".join(filter(None, [" ".join(block), inline]))
        block = []
    return {k: v for k, v in found.items() if not k.startswith(("hydra", "defaults"))}


def conf_dir() -> Path:
    return Path(config_dir())


def comments() -> dict[str, str]:
    """Every key's comment, the groups' keys under their group's name."""
    conf = conf_dir()
    found = yaml_comments(conf / "config.yaml")
    for group, name in GROUP_FILES.items():
        for path in (name, *EXTRA_FILES.get(group, ())):
            for key, text in yaml_comments(conf / path).items():
                if text and not found.get(f"{group}.{key}"):
                    found[f"{group}.{key}"] = text
    return found


def composed(*overrides: str):
    """The config `python -m bsbench <overrides>` composes, Hydra's section included (its record of the
    groups chosen), unresolved."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def leaves(schema: type, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, annotation, schema default) of every setting of a schema, nested sections flattened."""
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += leaves(kind, f"{prefix}{f.name}.")
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out.append((f"{prefix}{f.name}", kind, default))
    return out


def type_name(kind: Any) -> str:
    """An annotation in words: `int or null`, `list of int`, `mapping`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin in (list, typing.List):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (dict, typing.Dict):
        return "mapping"
    if kind is Any:
        return "any (checked when planned)"
    return kind.__name__


def value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)) and not value:
        return "{}" if isinstance(value, dict) else "[]"
    return str(value)


def view(cfg) -> dict[str, str]:
    """{dotted key: its value as the reference shows it}: resolved where that works outside a run,
    "`10` (follows `epochs`)" for a plain interpolation, as written where it cannot resolve
    (`${hydra:runtime.output_dir}`); a config group's key shows the option chosen (`logger`: `csv`)."""
    written = flatten({k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"})
    shown = {}
    for key, raw in written.items():
        text = f"`{value_text(raw)}`"
        # a value from Hydra's run (`${hydra:runtime.output_dir}`) is shown as written, whatever run this is
        if isinstance(raw, str) and "${" in raw and "${hydra:" not in raw:
            value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
            simple = re.fullmatch(r"\$\{([\w.]+)\}", raw)
            if value is not None:
                text = f"`{value_text(value)}`" + (f" (follows `{simple.group(1)}`)" if simple else "")
        shown[key] = text
    for group in GROUPS:
        shown[group] = f"`{cfg.hydra.runtime.choices.get(group)}`"
    return shown



def cell(text: str) -> str:
    """A table cell's text as Markdown shows it as written: outside `code`, `<name>` is not an HTML tag and
    `_target_` not emphasis (escaped); a `|` never ends the cell."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside code spans, where Markdown would read them
        parts[i] = (parts[i].replace("\\", "\\\\").replace("<", "&lt;").replace(">", "&gt;").replace("_", "\\_")
                    .replace("*", "\\*"))
    return "`".join(parts).replace("|", "\\|")


def settings_markdown() -> str:
    """The configuration reference: one table per section of the schema, every setting with its type,
    default, what each mode sets and its meaning; then the config groups and their options."""
    from bsbench.modes import MODULES

    base = view(composed())
    modes = {mode: view(composed(f"mode={mode}")) for mode in MODULES}
    notes = comments()
    sections: dict[str, list[str]] = {}
    for key, kind, schema_default in leaves(Config):
        section = key.split(".")[0] if "." in key else ""
        meaning = notes.get(key, "")
        if not meaning and section == "trainer":
            meaning = f"Lightning's `Trainer({key.split('.', 1)[1]}=...)`"
        if not meaning and key in GROUPS:
            meaning = f"the `{key}=` config group ([below](#config-groups))"
        default = base.get(key) or f"`{value_text(schema_default)}`"
        by_mode = "; ".join(f"{mode}: {shown[key]}" for mode, shown in modes.items()
                            if key != "mode" and key in shown and shown[key] != base.get(key))
        kind_text = type_name(kind)
        if key in RANGES:  # an `any` key's range says its types
            kind_text = RANGES[key].short if kind is Any else f"{kind_text}, {RANGES[key].short}"
        sections.setdefault(section, []).append(
            f"| `{key}` | {cell(kind_text)} | {cell(default)} | {cell(by_mode)} | {cell(meaning)} |")
    header = ["| key | type and range | default | set by a mode | meaning |", "| --- | --- | --- | --- | --- |"]
    # the sections, linked: the page shows no table of contents beside the tables, which take its width
    anchors = [("Top level", "top-level") if not section else (f"`{section}`", section) for section in sections]
    out = ["Sections: " + " · ".join(f"[{title}](#{anchor})" for title, anchor in
                                     [*anchors, ("config groups", "config-groups")]), ""]
    for section, lines in sections.items():
        title = f"`{section}`" if section else "Top level"
        intro = notes.get(section, "")
        if section in SECTIONS:
            intro = f"The `{section}=` group's keys, as `conf/{GROUP_FILES[section]}` sets them."
            if section == "trainer":
                intro += (f" Every argument of [Lightning's Trainer]({LIGHTNING_TRAINER}) that bsbench does not set "
                          "from its own keys.")
        out += [f"### {title}", ""] + ([intro, ""] if intro else []) + header + lines + [""]
    out += ["### Config groups", "", "| group | default | options |", "| --- | --- | --- |"]
    for group in GROUPS:
        names = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        default = base[group] if base[group] != "`None`" else "none"
        out.append(f"| `{group}=` | {default} | {', '.join(f'`{n}`' for n in names)} |")
    return "\n".join(out) + "\n"


BLOCKS = {"settings": settings_markdown, "fields": fields_markdown}


def rewrite(text: str, blocks: dict[str, str]) -> str:
    """The page with every generated block replaced by its current text."""
    for name, body in blocks.items():
        text = re.sub(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", lambda m: m.group(1) + body + m.group(2), text,
                      flags=re.S)
    return text


def generated() -> dict[str, str]:
    """{block name: its text} for every generated block."""
    return {name: make() for name, make in BLOCKS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsbench.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say which pages differ (exit 1)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the documentation's folder (default: %(default)s)")
    args = parser.parse_args(argv)
    blocks = generated()
    stale = []
    for page in sorted(args.docs.rglob("*.md")):
        text = page.read_text()
        new = rewrite(text, blocks)
        if new != text:
            stale.append(page)
            if not args.check:
                page.write_text(new)
    for page in stale:
        print(f"{page}: {'differs from' if args.check else 'rewritten from'} the schema")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
