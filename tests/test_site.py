"""`make site`: the documentation site builds offline with no warning, every internal link and image of
it resolves, each notebook page shows its figures, and PROTOCOL.md is one page per section."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from vgcore.site import GENERATED, sections, site_links, slug, split_protocol

from _ci import require
from _site import build_site
from _smoke_build import ROOT

require("myst_nb", "the docs extra (pip install -e '.[docs]') builds the site")

SITE_NOTEBOOKS = ("docs/notebooks", "figures/demo/notebooks")


class _Refs(HTMLParser):
    """Every href/src of a page, and every id it defines."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.refs.append(attrs[key])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


def parse(page: Path) -> _Refs:
    refs = _Refs()
    refs.feed(page.read_text())
    return refs


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "html"
    proc = build_site(out)
    assert proc.returncode == 0, f"make site failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr[-4000:]
    return out


def test_every_internal_link_and_image_of_the_site_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    ids = {}
    broken = []
    for page in pages:
        for ref in parse(page).refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc or ref.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or site.resolve() not in target.parents:
                broken.append(f"{page.relative_to(site)}: {ref}")
                continue
            if parts.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = parse(target).ids
                if parts.fragment not in ids[target]:
                    broken.append(f"{page.relative_to(site)}: {ref} (no such anchor)")
    assert not broken, "links into nothing:\n" + "\n".join(broken[:40])
    assert "docs/index.html" in (site / "index.html").read_text()


def _png_outputs(notebook: Path) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    return sum("image/png" in out.get("data", {}) for cell in cells for out in cell.get("outputs", []))


@pytest.mark.parametrize("folder", SITE_NOTEBOOKS)
def test_each_notebook_page_shows_every_figure_its_notebook_drew(site, folder):
    notebooks = sorted((ROOT / folder).glob("*.ipynb"))
    assert notebooks
    for notebook in notebooks:
        page = site / folder / f"{notebook.stem}.html"
        assert page.is_file(), f"{notebook.relative_to(ROOT)} is not on the site (docs/index.md's toctree)"
        drawn = [src for src in parse(page).images if "_images/" in src]
        assert len(drawn) == _png_outputs(notebook), notebook.name
        for src in drawn:
            assert (page.parent / src).stat().st_size > 1000, src


def test_each_figure_of_an_analysis_notebook_comes_after_its_caption():
    """The markdown cell just above a figure's cell says in at least one sentence what it shows."""
    for notebook in sorted((ROOT / "figures" / "demo" / "notebooks").glob("*.ipynb")):
        caption = None
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                caption = "".join(cell["source"])
            elif any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
                assert caption and re.search(r"^[^#\n].*\.", caption, flags=re.M | re.S), \
                    f"{notebook.name}: a figure without a caption above it"


def test_the_protocol_is_a_page_per_section_and_each_page_keeps_its_text(site):
    _, parts = sections((ROOT / "PROTOCOL.md").read_text())
    assert len(parts) >= 8
    for title, body in parts:
        page = site / "docs" / "protocol" / f"{slug(title)}.html"
        assert page.is_file(), title
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        first = next(line for line in body.splitlines() if line.strip() and not line.startswith(("#", "`", "|", "-")))
        assert " ".join(re.sub(r"[`*]", "", first).split()[:6]) in " ".join(text.split()), title


def test_the_api_reference_documents_the_core(site):
    ids = parse(site / "docs" / "api.html").ids
    for name in ("vgcore.losses.make_loss", "vgcore.losses.TripletLoss", "vgcore.metrics.variance.intra_var",
                 "vgcore.metrics.greediness.greediness", "vgcore.train.monitor.GreedinessMonitor",
                 "vgcore.metrics.retrieval.retrieval_metrics", "vgcore.train.train_step"):
        assert name in ids, f"{name} is not in the API reference"


def test_the_executed_per_run_notebooks_on_the_site_are_of_the_current_sources():
    """docs/notebooks/ holds one executed 01 and 02 of the demo build (the analysis notebooks' executed
    copies live in figures/demo/notebooks/): their cells are the committed notebooks' cells."""
    def cells(path: Path) -> list[tuple[str, str]]:
        nb = json.loads(path.read_text())
        return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]
                if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]

    for executed in sorted((ROOT / "docs" / "notebooks").glob("*.ipynb")):
        source = ROOT / "notebooks" / executed.name
        assert cells(executed) == cells(source), \
            f"{executed.relative_to(ROOT)} is stale: run `make demo`, then `make site-notebooks`"
        assert any(c.get("outputs") for c in json.loads(executed.read_text())["cells"]), "not executed"


def test_split_protocol_cuts_at_sections_outside_code_and_raises_their_headings(tmp_path):
    protocol = tmp_path / "PROTOCOL.md"
    protocol.write_text("# PROTOCOL\n\nIntro.\n\n## Losses: all\n\nText.\n\n```\n## not a section\n### nor this\n```\n\n"
                        "### Margins\n\nMore.\n\n## Tests\n\nLast.\n")
    out = tmp_path / "pages"
    (out / "gone.md").parent.mkdir()
    (out / "gone.md").write_text("a section that was removed")
    pages = split_protocol(protocol, out)
    assert [p.name for p in pages] == ["index.md", "losses-all.md", "tests.md"]
    assert not (out / "gone.md").exists()
    losses = (out / "losses-all.md").read_text()
    assert losses.startswith(GENERATED + "# Losses: all\n")
    assert "```\n## not a section\n### nor this\n```" in losses and "\n## Margins\n" in losses
    index = (out / "index.md").read_text()
    assert "Intro." in index and "losses-all\ntests\n```" in index and "# PROTOCOL" not in index
    before = (out / "tests.md").stat().st_mtime_ns
    split_protocol(protocol, out)
    assert (out / "tests.md").stat().st_mtime_ns == before, "an unchanged page is not rewritten"


def test_split_protocol_refuses_a_file_without_sections_and_repeated_titles(tmp_path):
    protocol = tmp_path / "PROTOCOL.md"
    protocol.write_text("# PROTOCOL\n\nNo sections.\n")
    with pytest.raises(ValueError, match="no '## ' section"):
        split_protocol(protocol, tmp_path / "a")
    protocol.write_text("## Tests\n\na\n\n## Tests\n\nb\n")
    with pytest.raises(ValueError, match="share a title"):
        split_protocol(protocol, tmp_path / "b")


def test_links_to_files_that_are_not_pages_become_the_executed_notebook_or_a_download(tmp_path):
    for path in ("notebooks/03_variance.ipynb", "notebooks/07_your_data.ipynb", "figures/demo/notebooks/03_variance.ipynb",
                 "figures/demo/tables/t.md", "docs/guide/a.md", "docs/guide/b.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    pages = {tmp_path / p for p in ("figures/demo/notebooks/03_variance.ipynb", "docs/guide/a.md", "docs/guide/b.md")}
    source = tmp_path / "docs" / "guide" / "a.md"
    text = ("[03](../../notebooks/03_variance.ipynb#top) [07](../../notebooks/07_your_data.ipynb) "
            "[t](../../figures/demo/tables/t.md) [b](b.md#x) [gone](../../notebooks/gone.ipynb) "
            "[web](https://example.org/x.md) [png](../../figures/demo/x.png)")
    assert site_links(text, source, tmp_path, lambda p: p in pages) == (
        "[03](../../figures/demo/notebooks/03_variance.ipynb#top) [07](path:../../notebooks/07_your_data.ipynb) "
        "[t](path:../../figures/demo/tables/t.md) [b](b.md#x) [gone](../../notebooks/gone.ipynb) "
        "[web](https://example.org/x.md) [png](../../figures/demo/x.png)")
