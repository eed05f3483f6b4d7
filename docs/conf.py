"""Sphinx configuration of the vgcore site (`make site` -> _site/html).

The source directory is the repository root (`sphinx-build -c docs . _site/html`), so the site reads
the files where they are committed: the guide pages in docs/, the executed analysis notebooks of
figures/demo/notebooks/ (myst-nb, never re-executed), their figures, and PROTOCOL.md, which is cut
into one page per `##` section under docs/protocol/ when the build starts; links written for GitHub to
files that are not pages become the executed notebook or a download (vgcore.site).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vgcore import __version__  # noqa: E402
from vgcore.site import site_links, split_protocol  # noqa: E402

project = "vgcore"
author = "the vgcore developers"
copyright = "2026, the vgcore developers"
release = __version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
root_doc = "docs/index"
include_patterns = ["docs/**", "figures/demo/notebooks/*.ipynb", "figures/*/README.md", "PROTOCOL.md", "README.md",
                    "CONTRIBUTING.md"]
exclude_patterns = [".venv", ".git", "results", "cache", "_site", "mutants", "tests", "notebooks", "workflow",
                    "benchmarks", "binder", "vgcore", "vgcore.egg-info", "data", "artifacts", "docs/conf.py"]

smartquotes = False  # quotes, dashes and `--set` stay as written (code-like text is common here)
nb_execution_mode = "off"  # the committed executed notebooks are the record: shown as they are
myst_heading_anchors = 4  # "#a-heading" links resolve as on GitHub
myst_enable_extensions = ["dollarmath", "html_image"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "alabaster"
html_title = f"vgcore {release}"
html_static_path: list[str] = []


def _split_protocol(app, config):
    split_protocol(ROOT / "PROTOCOL.md", ROOT / "docs" / "protocol")


def _site_links(app, docname, source):
    def is_page(path):
        return app.env.path2doc(str(path)) in app.env.found_docs

    source[0] = site_links(source[0], Path(app.env.doc2path(docname)), ROOT, is_page)


def setup(app):
    app.connect("config-inited", _split_protocol)
    app.connect("source-read", _site_links)
