"""The documentation site (docs/, mkdocs.yml) and the README cannot drift from the code.

- The configuration page lists every configuration key with its default, and no other key;
  no page names a configuration key that does not exist.
- Every page is in the nav, the site builds under ``mkdocs build --strict`` (no broken
  link, anchor or image), and the report's plots are on the results page.
- Every ``fedpit.…`` module or name, and every file of the repository the pages name,
  exists; no text names a file outside the repository.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedpit.config.schema import RunConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CONFIG_PAGE = DOCS / "configuration.md"
RESULTS_PAGE = DOCS / "results.md"


def default_flat() -> dict[str, object]:
    """Every configuration key (``section.name-with-dashes``) with its default, from the schema."""
    flat: dict[str, object] = {}
    for f in dataclasses.fields(RunConfig):
        value = getattr(RunConfig(), f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                flat[f"{f.name}.{sub.name}".replace("_", "-")] = getattr(value, sub.name)
        else:
            flat[f.name.replace("_", "-")] = value
    return flat


SECTIONS = sorted({key.split(".", 1)[0] for key in default_flat() if "." in key})

# A table row of the configuration page: | `key` | `default` | meaning |
ROW = re.compile(r"^\|\s*`([a-z][\w.-]*)`\s*\|\s*`([^`]*)`\s*\|")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def texts() -> dict[str, str]:
    """Every page of the site and the README, by path relative to the repository."""
    return {str(p.relative_to(ROOT)): p.read_text("utf-8") for p in [README, *pages()]}


def config_rows() -> list[tuple[str, str]]:
    return [
        m.groups() for line in CONFIG_PAGE.read_text("utf-8").splitlines() if (m := ROW.match(line))
    ]


def test_config_page_lists_every_key_with_its_default() -> None:
    rows = config_rows()
    keys = [key for key, _ in rows]
    assert len(keys) == len(set(keys)), "a key is listed twice"
    defaults = default_flat()
    missing = sorted(set(defaults) - set(keys))
    unknown = sorted(set(keys) - set(defaults))
    assert not missing, f"keys missing on docs/configuration.md: {missing}"
    assert not unknown, f"keys on docs/configuration.md that the schema lacks: {unknown}"
    wrong = []
    for key, shown in rows:
        value = tomllib.loads(f"v = {shown}")["v"]  # the default is written as TOML
        expected = defaults[key]
        if type(value) is not type(expected) or value != expected:
            wrong.append(f"{key}: page {shown}, schema {expected!r}")
    assert not wrong, "defaults differ from the schema: " + "; ".join(wrong)


# Dotted names that are not configuration keys: file names (`data.json`, `data.md`), a
# method call (`model.generate()`, left out by the pattern), a summary.json field.
NOT_KEYS = {"dp.epsilon"}
FILE_SUFFIXES = {"md", "json", "jsonl", "toml", "csv", "py", "png"}


def test_no_page_names_an_unknown_configuration_key() -> None:
    known = set(default_flat())
    sections = "|".join(SECTIONS)
    mention = re.compile(rf"(?<![\w./-])((?:{sections})\.[a-z][a-z0-9-]*[a-z0-9])(?![\w(-])")
    unknown = sorted(
        f"{name}: {key}"
        for name, text in texts().items()
        for key in set(mention.findall(text))
        if key not in known and key not in NOT_KEYS and key.rsplit(".", 1)[1] not in FILE_SUFFIXES
    )
    assert not unknown, f"configuration keys that do not exist: {unknown}"


def nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs (the `dev` extra)")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text("utf-8"))
    nav = [p for p in nav_pages(config["nav"]) if not p.startswith(("http://", "https://"))]
    assert len(nav) == len(set(nav)), "a page is twice in the nav"
    on_disk = {str(p.relative_to(DOCS)) for p in pages()}
    assert not sorted(on_disk - set(nav)), "pages not in the nav (orphans)"
    assert not sorted(set(nav) - on_disk), "nav entries without a page"


def test_every_plot_of_the_reports_is_on_the_results_page() -> None:
    plots = sorted((ROOT / "results").rglob("*.png"))
    assert plots
    page = RESULTS_PAGE.read_text("utf-8")
    shown = set(re.findall(r"!\[[^\]]*\]\(plots/([^)]+\.png)\)", page))
    absent = [
        str(p.relative_to(ROOT))
        for p in plots
        if p.relative_to(ROOT / "results").as_posix() not in shown
    ]
    assert not absent, f"plots not shown on docs/results.md: {absent}"


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs / mkdocs-material not installed (the `dev` extra: pip install -e '.[dev]')",
)
def test_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    for png in (ROOT / "results").rglob("*.png"):
        built = site / "plots" / png.relative_to(ROOT / "results")
        assert built.read_bytes() == png.read_bytes()
    assert 'src="../plots/study-syngen/frontier_rounds.png"' in (
        site / "results" / "index.html"
    ).read_text("utf-8")


MODULE_REF = re.compile(r"`(fedpit(?:\.[A-Za-z_]\w*)+)")


def defined_names(path: Path) -> set[str]:
    """Top-level names a module defines (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text("utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def resolves(dotted: str) -> bool:
    """Whether ``fedpit.a.b.name`` names a module of src/ (and a name it defines)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT / "src" / Path(*parts[:cut])
        module = (
            base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        )
        if module.is_file():
            rest = parts[cut:]
            return not rest or rest[0] in defined_names(module)
    return False


def test_every_module_the_pages_name_exists() -> None:
    broken = sorted(
        f"{name}: {ref}"
        for name, text in texts().items()
        for ref in set(MODULE_REF.findall(text))
        if not resolves(ref)
    )
    assert not broken, f"modules or names that do not exist: {broken}"


REPO_PATH = re.compile(r"(?<![\w./-])((?:configs|results|tests|bench|src|tools)/[\w./-]*[\w/])")


def test_every_file_the_pages_name_exists() -> None:
    missing = sorted(
        f"{name}: {path}"
        for name, text in texts().items()
        for path in set(REPO_PATH.findall(text))
        if not (ROOT / path).exists()
    )
    assert not missing, f"files named that do not exist: {missing}"


OUTSIDE = re.compile(r"FACTS\.md|DESIGN\.md|STYLE\.md|\.\./shared(?!/data)")


def test_no_text_names_a_file_outside_the_repository() -> None:
    roots = [
        README,
        DOCS,
        ROOT / "src" / "fedpit",
        ROOT / "bench",
        ROOT / "configs",
        ROOT / "Makefile",
        ROOT / "mkdocs.yml",
    ]
    files = [
        f
        for r in roots
        for f in ([r] if r.is_file() else r.rglob("*"))
        if f.is_file() and f.suffix in {"", ".md", ".py", ".toml", ".yml"}
    ]
    named = sorted(
        f"{f.relative_to(ROOT)}:{n}: {m.group()}"
        for f in files
        for n, line in enumerate(f.read_text("utf-8").splitlines(), 1)
        if (m := OUTSIDE.search(line))
    )
    assert not named, f"references to files outside the repository: {named}"
