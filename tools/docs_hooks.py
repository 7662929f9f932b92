"""MkDocs hooks of the FedPIT documentation site (``hooks:`` in ``mkdocs.yml``).

The report's plots live beside the reports, in ``results/<study>/<plot>.png``. The site
shows them without copying binary files into ``docs/``: every such PNG is added to the
site as ``plots/<study>/<plot>.png`` when the site is built, so a page links
``plots/study-syngen/frontier.png`` and ``mkdocs build --strict`` fails when a plot it
links does not exist. ``mkdocs serve`` also watches ``results/`` and rebuilds when a
report is rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PLOTS_URI = "plots"
"""Where the plots appear in the site (a folder of ``docs/`` that exists only in the build)."""


def _results_dir(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent / "results"


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add every ``results/**/*.png`` to the site under ``plots/``."""
    results = _results_dir(config)
    for png in sorted(results.rglob("*.png")):
        uri = f"{PLOTS_URI}/{png.relative_to(results).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def on_serve(server: Any, *, config: MkDocsConfig, builder: Any) -> Any:
    """Rebuild the served site when a plot in ``results/`` changes."""
    server.watch(str(_results_dir(config)))
    return server
