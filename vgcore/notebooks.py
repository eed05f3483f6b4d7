"""The conventions of the committed notebooks (``notebooks/*.py`` + ``.ipynb``) and the repository address.

One place for what every notebook shares, so that a new one (``notebooks/NN_name.py``) follows them
with one command, ``python -m vgcore notebooks fix notebooks/NN_name.py``, and
``python -m vgcore notebooks check`` (the pre-commit hook that ``make hooks`` installs, and
``tests/test_notebooks.py``) says what a notebook breaks:

- **the setup cell**: the first code cell is :func:`setup_cell` verbatim, collapsed in JupyterLab
  (``jupyter.source_hidden``) and Colab (``cellView: form`` with an ``@title`` line), tagged
  ``setup``. On Colab it clones the repository, installs vgcore and restores the committed demo
  runs; anywhere else it only moves the kernel to the repository root;
- **the title cell**: a markdown cell ``# NN · Title`` with the Colab and Binder badges of this
  notebook at the repository address;
- **the parameters cell** (tag ``parameters``, for papermill) right after the setup cell;
- **build plumbing in tags, not in the code**: a cell whose output nbval compares carries the tag
  ``nbval-check-output`` (no ``# NBVAL_...`` comments);
- **metadata**: :data:`KERNELSPEC`, the jupytext pairing, and ``language_info`` as the kernel reports
  it (JupyterLab writes it into a notebook that lacks it, which marks the notebook modified);
- **no outputs**, no execution counts, and a ``.py`` twin with the same cells (jupytext pair).

The repository address has one source, ``[project.urls] Repository`` in ``pyproject.toml``
(:func:`repository_url`); every badge and the setup cell take it, and :func:`set_repository`
(``make repo URL=https://github.com/<owner>/<name>``) changes it everywhere at once.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The checkout vgcore is imported from (its pyproject.toml, README.md and notebooks/)."""

BRANCH = "main"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
JUPYTEXT = {"formats": "ipynb,py:percent"}
LANGUAGE_INFO_KEYS = ("codemirror_mode", "file_extension", "mimetype", "name", "nbconvert_exporter",
                      "pygments_lexer", "version")
SETUP_METADATA = {"cellView": "form", "jupyter": {"source_hidden": True}, "tags": ["setup"]}
CHECK_TAG = "nbval-check-output"
COLAB_DIR = "/content/vgcore-repo"
_SLUG = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$")

_SETUP = '''\
# @title Setup (on Colab: install vgcore and the demo runs; elsewhere: work from the repository root)
# On Colab this clones the repository, installs vgcore with pip and restores the committed demo runs
# (figures/demo/results.tar.gz) under results/; anywhere else it installs nothing. Either way the
# kernel then works from the repository root, where results/, figures/, cache/ and data/ live.
import os
import subprocess
import sys
from pathlib import Path

VGCORE_GIT = "{url}"  # pyproject.toml [project.urls]; `make repo URL=...` changes it
if "google.colab" in sys.modules:
    repo = Path("{colab_dir}")
    if not repo.is_dir():
        subprocess.run(["git", "clone", "--depth=1", VGCORE_GIT, str(repo)], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"{{repo}}[notebooks,offline]"], check=True)
    os.chdir(repo)
    if Path("figures/demo/results.tar.gz").is_file():  # the analysis notebooks start from these runs
        subprocess.run([sys.executable, "-m", "vgcore", "snapshot", "restore", "figures/demo/results.tar.gz"],
                       check=True)
elif Path.cwd().name == "notebooks" and (Path.cwd().parent / "pyproject.toml").is_file():
    os.chdir("..")  # JupyterLab and Binder start the kernel in notebooks/'''


# --- the repository address ----------------------------------------------------------------------


def repository_url(root: str | os.PathLike = ROOT) -> str:
    """``[project.urls] Repository`` of `root`'s pyproject.toml."""
    urls = tomllib.loads((Path(root) / "pyproject.toml").read_text())["project"].get("urls", {})
    if "Repository" not in urls:
        raise ValueError(f"{Path(root) / 'pyproject.toml'} has no [project.urls] Repository")
    return urls["Repository"]


def slug(url: str) -> str:
    """``owner/name`` of a GitHub address (Colab and Binder open notebooks from GitHub only)."""
    m = _SLUG.match(url)
    if not m:
        raise ValueError(f"{url!r} is not a GitHub repository address; give https://github.com/<owner>/<name>")
    return m[1]


def badges(name: str, url: str) -> tuple[str, str]:
    """The Colab and Binder badges (Markdown) of ``notebooks/<name>.ipynb`` in the repository at `url`."""
    s = slug(url)
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{s}/blob/{BRANCH}/notebooks/{name}.ipynb)",
            f"[![Launch on Binder](https://mybinder.org/badge_logo.svg)]"
            f"(https://mybinder.org/v2/gh/{s}/{BRANCH}?urlpath=lab/tree/notebooks/{name}.ipynb)")


_ADDRESS_FORMS = ("https://github.com/{}", "colab.research.google.com/github/{}/", "mybinder.org/v2/gh/{}/")


def address_files(root: str | os.PathLike = ROOT) -> list[Path]:
    """The files that name the repository address: pyproject.toml, README.md, the pages under docs/
    that name it (install commands, badges, the clone) and the notebooks."""
    root = Path(root)
    pages = [p for p in sorted((root / "docs").rglob("*.md")) if addresses_in(p.read_text())]
    return [root / "pyproject.toml", root / "README.md", *pages, *sorted((root / "notebooks").glob("*.py")),
            *sorted((root / "notebooks").glob("*.ipynb"))]


def addresses_in(text: str) -> set[str]:
    """Every ``owner/name`` a GitHub, Colab or Binder address in `text` points at."""
    found = set(re.findall(r"https://github\.com/([A-Za-z0-9_.-]+/[A-Za-z0-9_-]+)", text))
    found |= set(re.findall(r"colab\.research\.google\.com/github/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)/", text))
    found |= set(re.findall(r"mybinder\.org/v2/gh/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)/", text))
    return found


def set_repository(url: str, root: str | os.PathLike = ROOT) -> list[Path]:
    """Make `url` the repository address of the checkout at `root`: pyproject.toml, every badge and
    every setup cell. Returns the files changed. Addresses of other repositories are left alone."""
    new, old = slug(url), slug(repository_url(root))
    changed = []
    for path in address_files(root):
        text = path.read_text()
        out = text
        for form in _ADDRESS_FORMS:
            out = out.replace(form.format(old), form.format(new))
        if path.name == "pyproject.toml":
            out = re.sub(r'(?m)^Repository = ".*"$', f'Repository = "https://github.com/{new}"', out)
        if out != text:
            path.write_text(out)
            changed.append(path)
    return changed


# --- the setup cell and the checks ---------------------------------------------------------------


def setup_cell(url: str | None = None) -> str:
    """The source of every notebook's first code cell, for the repository at `url` (default: ours)."""
    return _SETUP.format(url=url or repository_url(), colab_dir=COLAB_DIR)


def _language_info(nb) -> dict:
    return dict(nb.metadata.get("language_info", {}))


def problems(path: str | os.PathLike, url: str | None = None, language_info: dict | None = None) -> list[str]:
    """What ``notebooks/<name>.ipynb`` (and its ``.py`` twin) breaks of the conventions; empty when none.

    `language_info`: the one every notebook must carry (default: whatever this one has, checked for
    completeness only).
    """
    import jupytext
    import nbformat

    path = Path(path).with_suffix(".ipynb")
    name = path.stem
    url = url or repository_url(path.resolve().parents[1])
    if not path.exists():
        return [f"{path} is missing: run `python -m vgcore notebooks fix {path.with_suffix('.py')}`"]
    nb = nbformat.read(path, as_version=4)
    out = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    executed = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    if executed:
        out.append(f"{len(executed)} code cell(s) have outputs or execution counts: clear them "
                   f"(`python -m vgcore notebooks fix {path}`, or Edit > Clear Outputs of All Cells in JupyterLab)")
    if nb.metadata.get("kernelspec") != KERNELSPEC:
        out.append(f"kernelspec is {nb.metadata.get('kernelspec')}, not {KERNELSPEC}")
    if nb.metadata.get("jupytext", {}).get("formats") != JUPYTEXT["formats"]:
        out.append(f"not paired with its .py: jupytext formats should be {JUPYTEXT['formats']!r}")
    info = _language_info(nb)
    if sorted(info) != sorted(LANGUAGE_INFO_KEYS):
        out.append(f"language_info has keys {sorted(info)}, not {sorted(LANGUAGE_INFO_KEYS)}: without it JupyterLab "
                   "marks the notebook modified on opening")
    elif language_info is not None and info != language_info:
        out.append(f"language_info {info} differs from the other notebooks' {language_info}")
    extra = sorted(set(nb.metadata) - {"kernelspec", "jupytext", "language_info"})
    if extra:
        out.append(f"unexpected notebook metadata {extra}")
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not re.match(rf"# {re.escape(name[:2])} · \S", first.source):
        out.append(f"the first cell should be a markdown title '# {name[:2]} · ...'")
    else:
        for badge in badges(name, url):
            if badge not in first.source:
                out.append(f"the title cell lacks the badge {badge}")
    if not code or code[0].source != setup_cell(url):
        out.append("the first code cell is not the setup cell (vgcore.notebooks.setup_cell)")
    elif dict(code[0].metadata) != SETUP_METADATA:
        out.append(f"the setup cell's metadata is {dict(code[0].metadata)}, not {SETUP_METADATA} (collapsed in "
                   "JupyterLab and Colab)")
    params = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", ())]
    if params != [1]:
        out.append("exactly one cell tagged 'parameters' must follow the setup cell")
    if any(re.search(r"^\s*#\s*NBVAL_", c.source, flags=re.M) for c in code):
        out.append(f"nbval markers belong in cell tags ({CHECK_TAG!r}), not in # NBVAL_ comments")
    twin = path.with_suffix(".py")
    if not twin.exists():
        out.append(f"{twin} is missing: pair it (jupytext --set-formats ipynb,py:percent {path})")
    else:
        a = [(c.cell_type, c.source.strip(), dict(c.metadata)) for c in jupytext.read(twin).cells]
        b = [(c.cell_type, c.source.strip(), dict(c.metadata)) for c in nb.cells]
        if a != b:
            out.append(f"{twin.name} and {path.name} hold different cells: run `make sync-notebooks`")
    return out


def check(paths=None, root: str | os.PathLike = ROOT) -> dict[str, list[str]]:
    """:func:`problems` of every notebook in `paths` (default: all of ``notebooks/``), with the
    ``language_info`` of the first one imposed on the rest; only notebooks with problems."""
    import nbformat

    root = Path(root)
    paths = sorted({Path(p).with_suffix(".ipynb") for p in paths} if paths else (root / "notebooks").glob("*.ipynb"))
    url = repository_url(root)
    reference = None
    for p in sorted((root / "notebooks").glob("*.ipynb")):
        info = _language_info(nbformat.read(p, as_version=4))
        if sorted(info) == sorted(LANGUAGE_INFO_KEYS):
            reference = info
            break
    found = {str(p): problems(p, url, reference) for p in paths}
    return {p: v for p, v in found.items() if v}


def kernel_language_info(kernel: str = "python3") -> dict:
    """The ``language_info`` the kernel reports (what JupyterLab writes into an opened notebook)."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel)
    try:
        return dict(kc.kernel_info(reply=True, timeout=60)["content"]["language_info"])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def fix(path: str | os.PathLike, url: str | None = None, language_info: dict | None = None) -> list[Path]:
    """Bring a notebook pair to the conventions: the setup cell (inserted or replaced, with its
    metadata), the badges under the title, the metadata, no outputs; ``nbval`` comments become tags.
    Reads the ``.py`` when it exists (the source of truth), writes both files; returns them."""
    import jupytext
    import nbformat

    path = Path(path)
    py, ipynb = path.with_suffix(".py"), path.with_suffix(".ipynb")
    url = url or repository_url(path.resolve().parents[1])
    nb = jupytext.read(py if py.exists() else ipynb)
    name = py.stem
    if language_info is None:
        siblings = [p for p in sorted(ipynb.parent.glob("*.ipynb")) if p != ipynb]
        infos = [_language_info(nbformat.read(p, as_version=4)) for p in siblings]
        language_info = next((i for i in infos if sorted(i) == sorted(LANGUAGE_INFO_KEYS)), None)
        language_info = language_info or kernel_language_info()
    nb.metadata = nbformat.from_dict({"jupytext": dict(JUPYTEXT), "kernelspec": dict(KERNELSPEC),
                                      "language_info": dict(language_info)})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            lines = cell.source.splitlines()
            marked = [ln for ln in lines if re.match(r"^\s*#\s*NBVAL_CHECK_OUTPUT\s*$", ln)]
            if marked:
                cell.source = "\n".join(ln for ln in lines if ln not in marked)
                cell.metadata["tags"] = sorted({*cell.metadata.get("tags", ()), CHECK_TAG})
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = nbformat.v4.new_code_cell(setup_cell(url), metadata=json.loads(json.dumps(SETUP_METADATA)))
    if code and ("google.colab" in code[0].source or "setup" in code[0].metadata.get("tags", ())):
        nb.cells[nb.cells.index(code[0])] = setup
    else:
        nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, setup)
    title = nb.cells[0]
    if title.cell_type == "markdown":
        lines = [ln for ln in title.source.split("\n")
                 if "colab.research.google.com/github/" not in ln and "mybinder.org/v2/gh/" not in ln]
        while len(lines) > 1 and lines[1] == "" and len(lines) > 2 and lines[2] == "":
            del lines[1]
        title.source = "\n".join([lines[0], "", *badges(name, url), *lines[1:]]).rstrip("\n")
    jupytext.write(nb, py, fmt="py:percent")
    if ipynb.exists():  # keep the cell ids of the committed .ipynb (clean diffs)
        from jupytext.combine import combine_inputs_with_outputs

        nb = combine_inputs_with_outputs(jupytext.read(py), nbformat.read(ipynb, as_version=4), fmt="py:percent")
    else:
        nb = jupytext.read(py)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata = nbformat.from_dict({"jupytext": dict(JUPYTEXT), "kernelspec": dict(KERNELSPEC),
                                      "language_info": dict(language_info)})
    nbformat.write(nbformat.from_dict(nb), ipynb)
    return [py, ipynb]


def pre_save_hook(model, path, contents_manager, **kwargs):
    """``ContentsManager.pre_save_hook`` of ``make lab``: a notebook saved from JupyterLab keeps the
    ``language_info`` it has on disk when only the kernel's Python patch release differs (another
    Python than the one the notebooks were committed with is not a change to the notebook)."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    try:
        on_disk = json.loads(Path(contents_manager._get_os_path(path)).read_text())["metadata"]["language_info"]
    except (OSError, ValueError, KeyError, AttributeError):
        return
    info = model["content"].get("metadata", {}).get("language_info")
    if isinstance(info, dict) and {k: v for k, v in info.items() if k != "version"} == \
            {k: v for k, v in on_disk.items() if k != "version"}:
        model["content"]["metadata"]["language_info"] = on_disk
