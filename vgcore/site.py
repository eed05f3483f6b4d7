"""What the site (docs/conf.py, ``make site``) does to the repository's Markdown as it reads it.

- :func:`split_protocol`: PROTOCOL.md stays the one file that is edited (and that tests and the README
  cite); the site shows it as pages: ``docs/protocol/index.md`` holds the preamble and the table of
  contents, and each section becomes ``docs/protocol/<slug>.md`` whose ``# title`` is the section's,
  every heading one level up.
- :func:`site_links`: a page's links to Markdown or notebooks of the repository that are not pages of
  the site (they are written for reading on GitHub) become the executed copy of the notebook the site
  shows, or a download of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

GENERATED = "<!-- Generated from PROTOCOL.md by vgcore.site when the site is built: edit PROTOCOL.md. -->\n"


def slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def sections(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(title, body), ...]) split at ``## `` headings outside fenced code."""
    preamble, found = [], []
    fenced = False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            found.append((line[3:].strip(), []))
        elif found:
            found[-1][1].append(line)
        else:
            preamble.append(line)
    return "".join(preamble), [(title, "".join(body)) for title, body in found]


def _raise_headings(body: str) -> str:
    """Each heading outside fenced code one level up (``### x`` -> ``## x``)."""
    out, fenced = [], False
    for line in body.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        out.append(line[1:] if not fenced and re.match(r"###+ ", line) else line)
    return "".join(out)


def split_protocol(protocol: Path, out_dir: Path) -> list[Path]:
    """Write the protocol pages into `out_dir` (a file is rewritten only when its text changes, and a
    page whose section is gone is removed); returns the pages, index first."""
    preamble, parts = sections(Path(protocol).read_text())
    if not parts:
        raise ValueError(f"{protocol} has no '## ' section to make a page of")
    body = re.sub(r"\A# .*\n", "", preamble).strip()
    slugs = [slug(title) for title, _ in parts]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"{protocol}: two '## ' sections share a title: {slugs}")
    toc = "\n".join(["```{toctree}", ":maxdepth: 1", "", *slugs, "```"])
    pages = {"index": f"{GENERATED}# Protocol\n\n{body}\n\n{toc}\n"}
    for (title, text), name in zip(parts, slugs, strict=True):
        pages[name] = f"{GENERATED}# {title}\n{_raise_headings(text).rstrip()}\n"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in set(out_dir.glob("*.md")) - {out_dir / f"{name}.md" for name in pages}:
        stale.unlink()
    written = []
    for name, text in pages.items():
        path = out_dir / f"{name}.md"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


EXECUTED_COPIES = ("docs/notebooks", "figures/demo/notebooks")
"""Where the site's executed notebooks are, first match wins (``notebooks/<name>.ipynb`` -> one of these)."""

_LINK = re.compile(r"\]\((?!\w+:|#|/)([^()\s#]+\.(?:md|ipynb))(#[^()\s]*)?\)")


def site_links(text: str, source: Path, root: Path, is_page: Callable[[Path], bool]) -> str:
    """`text` of the file `source` with each relative link to an existing ``.md``/``.ipynb`` file that is
    not a page (``is_page``) pointed at what the site has: a notebook of ``notebooks/`` at its executed
    copy when that is a page, anything else at a download of the file (myst's ``path:`` links)."""
    root = Path(root).resolve()

    def point(match: re.Match) -> str:
        target = (Path(source).parent / match.group(1)).resolve()
        if not target.is_file() or is_page(target):
            return match.group(0)
        if target.parent == root / "notebooks":
            for folder in EXECUTED_COPIES:
                copy = root / folder / target.name
                if copy.is_file() and is_page(copy):
                    return f"]({os.path.relpath(copy, Path(source).parent)}{match.group(2) or ''})"
        return f"](path:{match.group(1)})"

    return _LINK.sub(point, text)
