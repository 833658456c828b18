"""The documentation: a short README linking every docs/ page, links that resolve, and generated pages
(configuration from the config schema, command line from the kiln parser) that match the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiln import docs, schemas
from kiln.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
#: [text](target) outside code spans and fenced blocks; an image's ![..](..) too
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return sorted((REPO / "docs").glob("*.md"))


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (their brackets are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file, and its explicit ``<a id=...>`` ones."""
    text = path.read_text()
    found = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"


def test_every_docs_page_is_linked_from_the_readme():
    assert len(pages()) >= 10
    linked = {(REPO / target.split("#")[0]).resolve() for target in links(REPO / "README.md")}
    unlinked = [page.relative_to(REPO).as_posix() for page in pages() if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("path", [REPO / "README.md", *pages()], ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(path):
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading or anchor '{anchor}' in {resolved.relative_to(REPO)}")
    assert not broken, f"{path.relative_to(REPO)}: " + "; ".join(broken)


def test_adding_a_model_has_one_home():
    """The walk-through lives in docs/adding-a-model.md only; the README links it."""
    readme = (REPO / "README.md").read_text()
    assert "docs/adding-a-model.md" in readme
    assert "FAMILY = FamilySpec(" not in readme and "## Adding a model" not in readme


def test_generated_pages_are_current():
    stale = docs.stale_pages()
    assert not stale, f"out of date with the code they document: {stale}; regenerate: {docs.REGENERATE}"


def test_configuration_page_covers_every_key():
    """Every property of the schema has a description, and its key appears in the generated page with
    the loader's default where the loader has one."""
    schema = schemas.load("config")
    page = (REPO / "docs/configuration.md").read_text()
    missing = []

    def walk(node: dict, where: str) -> None:
        for name, prop in node.get("properties", {}).items():
            if not prop.get("description"):
                missing.append(f"{where}{name}")
            walk(prop, f"{where}{name}.")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{where}<name>.")

    walk(schema, "")
    for name, definition in schema["$defs"].items():
        if not definition.get("description"):
            missing.append(f"$defs.{name}")
        walk(definition, f"$defs.{name}.")
        assert f"### `{name}`" in page
    assert not missing, f"config schema keys without a description: {missing}"
    assert "| `weight_threshold` |  | integer | `2048` |" in page      # kiln.config.DEFAULT_QUANTIZE
    assert "| `compiler` |  | one of `auto`, `apple`, `kiln` | `auto` |" in page


def test_schema_defaults_are_what_the_loader_applies(tmp_path):
    """The ``default`` annotations the reference shows are the values kiln uses when the key is absent."""
    from kiln.config import load_config

    config = tmp_path / "config.yaml"
    config.write_text("""\
models:
  m:
    family: silero_vad
    task: vad
    source: {kind: path, path: weights.jit}
    components:
      unified:
        inputs: {x: {shape: [1, 4], dtype: float32}}
        outputs: {y: {shape: [1, 1], dtype: float32}}
""")
    loaded = load_config(config)
    model = schemas.load("config")["$defs"]["model"]["properties"]
    assert loaded.models["m"].mem_mb == model["resources"]["properties"]["mem_mb"]["default"]
    assert loaded.models["m"].enabled is model["enabled"]["default"]
    assert loaded.models["m"].synthetic is model["synthetic"]["default"]
    assert loaded.results_dir == schemas.load("config")["properties"]["results_dir"]["default"]


def test_command_line_page_names_every_subcommand():
    page = (REPO / "docs/command-line.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    assert len(commands) >= 10
    for name in commands:
        assert f"### kiln {name}\n" in page, name
        assert f"kiln {name} [-h]" in page, name


def _checkout_copy(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    for page in docs.PAGES:
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / page, root / page)
    return root


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "kiln.docs", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_the_check_names_a_stale_page_and_the_command_that_regenerates_it(tmp_path):
    """Run as a user would: an edited generated section is reported (exit 1) by `--check`, naming the page
    and the command; `python -m kiln.docs` rewrites that section alone; the check then passes."""
    root = _checkout_copy(tmp_path)
    page = root / "docs/configuration.md"
    original = page.read_text()
    page.write_text(original.replace("| `weight_threshold` |", "| `weight_limit` |")
                    .replace("## Reference", "## Reference (hand-edited prose survives)"))

    result = _run("--check", "--root", str(root))
    assert result.returncode == 1, result
    assert "docs/configuration.md: out of date" in result.stderr and "python -m kiln.docs" in result.stderr
    assert "command-line.md" not in result.stderr

    result = _run("--root", str(root))
    assert result.returncode == 0 and result.stdout.strip() == "wrote docs/configuration.md", result
    assert page.read_text() == original.replace("## Reference", "## Reference (hand-edited prose survives)")
    assert _run("--check", "--root", str(root)).returncode == 0


def test_a_page_without_its_markers_is_one_line_exit_2(tmp_path):
    root = _checkout_copy(tmp_path)
    page = root / "docs/command-line.md"
    page.write_text(page.read_text().replace(docs.END, ""))
    result = _run("--check", "--root", str(root))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "docs/command-line.md: needs exactly one" in result.stderr
