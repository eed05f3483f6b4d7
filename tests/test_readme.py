"""README.md and the guide (docs/guide/*.md) stay true: their "own model" examples run, their local
links point at files, their tables are the committed ones, and README.md stays a landing page."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from _smoke_build import ROOT, env

README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide"
# the pages README.md's sections moved to (docs/index.md's toctree lists exactly these)
PAGES = ("install", "results", "fair", "make-targets", "command-line", "notebooks", "own-model", "layout", "reproducing")


def page(name: str):
    return GUIDE / f"{name}.md"


def section(path, title: str) -> str:
    """The `## title` section of the Markdown file at `path`, or the whole file if `title` is its `# title`."""
    text = path.read_text()
    if text.startswith(f"# {title}\n"):
        return text
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def markdown_files() -> list:
    return [README, *(page(name) for name in PAGES)]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def _run_python(code: str, cwd) -> str:
    script = cwd / "readme_example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def _own_model_blocks() -> tuple[list[str], list[str]]:
    text = section(page("own-model"), "Use it on your own model")
    return python_blocks(text), re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.mark.slow
def test_own_model_1_a_vgcore_loss_in_a_pml_loop(tmp_path):
    out = _run_python(_own_model_blocks()[0][0], tmp_path)
    steps = re.findall(r"^step (\d+): loss ([\d.]+), (\d+) of (\d+) triplets active$", out, re.M)
    assert [int(s[0]) for s in steps] == [0, 20, 40], out
    assert all(0 < int(s[2]) <= int(s[3]) for s in steps), out
    final = re.search(r"intra-class variance ([\d.]+), inter-class variance ([\d.]+), "
                      r"query-gallery Recall@1 ([\d.]+)$", out, re.M)
    assert final, out
    assert 0 < float(final[1]) < float(final[2]) and 0.5 < float(final[3]) <= 1, out


@pytest.mark.slow
def test_own_model_1_trains_the_parameters_of_a_loss_that_has_them(tmp_path):
    """Block 1 with ArcFace in place of triplet: its class vectors are parameters of the loss, and
    the block's optimiser must hold them, or they never move."""
    code = _own_model_blocks()[0][0]
    assert code.count('make_loss("triplet")') == 1
    code = code.replace('make_loss("triplet")', 'make_loss("arcface", num_classes=10, embedding_dim=32)')
    loop = "\nfor step in range(60):"
    assert code.count(loop) == 1
    code = code.replace(loop, "\nbefore = [p.detach().clone() for p in loss_func.parameters()]" + loop)
    code += ("moved = [not torch.equal(b, p) for b, p in zip(before, loss_func.parameters(), strict=True)]\n"
             "print(f'loss parameters moved: {len(moved)} of which {sum(moved)}')\n")
    out = _run_python(code, tmp_path)
    assert re.search(r"^loss parameters moved: (\d+) of which \1$", out, re.M) and "moved: 0 " not in out, out


@pytest.mark.slow
def test_own_model_2_the_monitor_on_a_pml_loop(tmp_path):
    out = _run_python(_own_model_blocks()[0][1], tmp_path)
    rows = re.findall(r"^([0-2])\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [0, 1, 2], out
    assert all(0 < float(r[2]) <= 1 and 0 < float(r[3]) <= 1 and float(r[4]) > 0 for r in rows), out


@pytest.mark.slow
def test_own_model_3_your_features_through_the_comparison(tmp_path):
    python, bash = _own_model_blocks()
    _run_python(python[2], tmp_path)
    outputs = []
    for line in bash[0].splitlines():
        command = line.split("#")[0].split()
        assert command[:3] == ["python", "-m", "vgcore"], line
        proc = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=env(VGCORE_CACHE=str(tmp_path / "c")),
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-4000:]
        outputs.append(proc.stdout)
    # the file is an override of profile custom: its runs live in a variant folder named by its digest
    assert len(list((tmp_path / "results" / "custom" / "variants").glob("*/custom/*/seed*/summary.json"))) == 21
    table = [line for line in outputs[1].splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == [
        "your embeddings", "contrastive", "triplet", "npair", "infonce", "arcface", "scl", "ccl"], outputs[1]
    assert "superclass_recall@1" in table[0] and "as the seven losses' runs" in outputs[1]


def test_readme_example_on_your_own_model(tmp_path):
    """README.md's one example: a vgcore loss in a plain loop, then VARIANCE and retrieval."""
    blocks = python_blocks(section(README, "Use it on your own model"))
    assert len(blocks) == 1, "README.md keeps one short example; the others live in docs/guide/own-model.md"
    out = _run_python(blocks[0], tmp_path)
    final = re.search(r"^intra-class variance ([\d.]+), inter-class variance ([\d.]+), Recall@1 ([\d.]+)$", out, re.M)
    assert final, out
    assert 0 < float(final[1]) < float(final[2]) and 0.5 < float(final[3]) <= 1, out
    active = re.search(r"^last step: (\d+) of (\d+) triplets active$", out, re.M)
    assert active and 0 < int(active[1]) <= int(active[2]), out


def test_readme_is_a_landing_page():
    size = len(README.read_bytes())
    assert size <= 15 * 1024, f"README.md is {size} bytes: move detail into docs/guide/ (at most 15 KB)"


def test_guide_pages_have_one_title_each():
    """docs/index.md's toctree lists these pages: each exists and has one `# Title`, at its top."""
    for name in PAGES:
        text = re.sub(r"^```.*?^```$", "", page(name).read_text(), flags=re.S | re.M)  # code aside
        titles = re.findall(r"^# .+$", text, flags=re.M)
        assert len(titles) == 1 and text.startswith(titles[0]), f"docs/guide/{name}.md: titles {titles}"


def test_local_links_and_images_exist():
    """Every relative link and image of README.md and of each guide page resolves from the file that
    holds it (anchors aside)."""
    assert sorted(p.name for p in GUIDE.glob("*.md")) == sorted(f"{name}.md" for name in PAGES)
    for path in markdown_files():
        text = path.read_text()
        targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) + re.findall(r'<img [^>]*src="([^"]+)"', text)
        local = [t for t in targets if not re.match(r"[a-z]+:", t)]
        assert local or path != README, "README.md links into the guide"
        missing = [t for t in local if not (path.parent / t).exists()]
        assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"
    readme = README.read_text()
    for name in PAGES:
        assert f"](docs/guide/{name}.md)" in readme, f"README.md does not link docs/guide/{name}.md"


def test_included_tables_are_the_committed_ones():
    """A table between `<!-- include FILE -->` and `<!-- end include -->` (FILE relative to the
    repository root) is FILE's table, verbatim, in README.md and in every guide page."""
    found = 0
    for md in markdown_files():
        blocks = re.findall(r"<!-- include (\S+) -->\n(.*?)\n<!-- end include -->", md.read_text(), flags=re.S)
        found += len(blocks)
        for path, block in blocks:
            assert block.strip() == (ROOT / path).read_text().strip(), \
                f"{md.relative_to(ROOT)}'s copy of {path} is stale: paste the file's current content between the markers"
    assert found, "neither README.md nor the guide includes a generated table"
    assert "<!-- include figures/demo/tables/05_retrieval.md -->" in page("results").read_text()


def test_readme_recall_table_is_the_committed_one():
    """README.md's short table: each loss's test Recall@1 per dataset, as 05_retrieval.csv has it."""
    import pandas as pd

    retrieval = pd.read_csv(ROOT / "figures" / "demo" / "tables" / "05_retrieval.csv")
    rows = [[cell.strip() for cell in ln.strip().strip("|").split("|")]
            for ln in section(README, "Results").splitlines() if ln.startswith("| ")]
    header, rule, body = rows[0], rows[1], rows[2:]
    assert set("".join(rule)) <= set("-:"), rule
    datasets = list(dict.fromkeys(retrieval["dataset"]))
    assert header == ["loss", *datasets], header
    assert [r[0] for r in body] == list(dict.fromkeys(retrieval["loss"])), "one row per loss of the table"
    for row in body:
        for dataset, cell in zip(datasets, row[1:], strict=True):
            committed = retrieval.loc[(retrieval["loss"] == row[0]) & (retrieval["dataset"] == dataset), "recall@1"]
            assert cell == committed.item(), f"{row[0]} on {dataset}: README {cell}, table {committed.item()}"


def test_summary_counts_the_claims_the_demo_table_reports():
    """The summary's counts are the table's, in the decision table's words (strongest first); a loss
    that failed the gate is named with its dataset; each member that breaks a group claim is named; the
    table is called descriptive."""
    import pandas as pd

    from vgcore.report.claims import ORDER

    summary = " ".join(section(page("results"), "Results of the demo profile").split())  # line breaks read as spaces
    claims = pd.read_csv(ROOT / "figures" / "demo" / "tables" / "06_claims.csv")
    counts = claims["verdict"].value_counts()
    stated = f"{len(claims)} claim checks: " + "; ".join(
        f"{int(counts[v])} {v}" for v in reversed(ORDER) if counts.get(v, 0))
    assert stated in summary, f"the demo table has {stated}: update the summary paragraph"
    assert stated in " ".join(section(README, "Results").split()), f"the demo table has {stated}: update README.md"
    assert "descriptive" in summary
    gate = pd.read_csv(ROOT / "figures" / "demo" / "tables" / "06_gate.csv")
    for _, row in gate.loc[~gate["learned"].astype(bool)].iterrows():
        assert f"{row['loss']} did not learn on {row['dataset']}" in summary
    members = pd.read_csv(ROOT / "figures" / "demo" / "tables" / "06_claims_members.csv")
    broken = members.loc[members["breaks claim"].astype(bool)]
    for (claim, dataset), rows in broken.groupby(["claim", "dataset"], sort=False):
        line = f"{claim} on {dataset}: broken by {', '.join(rows['member'])}"
        assert line in summary, f"name each member that breaks a group claim: {line!r}"
    for png in ("03_variance_bars", "04_active_ratio_over_training", "05_tradeoff", "06_claims"):
        assert f'src="../../figures/demo/{png}.png"' in summary


def test_every_notebook_has_its_binder_and_colab_badge():
    from vgcore import notebooks

    text = section(page("notebooks"), "Exploring the notebooks: JupyterLab, Binder, Colab")
    for name in sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")):
        for badge in notebooks.badges(name, notebooks.repository_url()):
            assert badge.split("](", 1)[1] in text, name


def test_the_top_says_what_vgcore_is_before_the_commands_and_how_long_they_take():
    top = README.read_text().split("\n## ")[0]
    first_code = top.index("```")
    prose = re.sub(r"\[!\[.*?\)\]\(.*?\)", "", top[:first_code])  # badges aside
    assert "metric-learning losses" in prose and len(re.findall(r"[.!?](\s|$)", prose)) >= 2, \
        "two sentences on what vgcore is, before the commands"
    commands = top[first_code:top.index("```", first_code + 3)]
    for target in ("make demo", "make test", "make restore"):
        line = next(ln for ln in commands.splitlines() if ln.startswith(target))
        assert re.search(r"\d+ (min|minutes|s)\b", line) or target == "make restore", f"{target}: how long?"


def test_the_readme_commands_are_the_make_targets_that_build_test_and_restore():
    """Each command of the README's first block is a Makefile target whose recipe (`make -n`, nothing run)
    is what the README says it does."""
    top = README.read_text().split("\n## ")[0]
    block = top[top.index("```bash"):top.index("```", top.index("```bash") + 3)]
    commands = [ln.split("#")[0].strip() for ln in block.splitlines()[1:] if ln.strip()]
    expected = {"make demo": "-m vgcore demo", "make test": "-m pytest",
                "make restore": "-m vgcore snapshot restore figures/demo/results.tar.gz --results results"}
    assert commands == list(expected), commands
    stamp = ROOT / ".venv" / ".vgcore-installed"
    for command, recipe in expected.items():
        proc = subprocess.run([*command.split(), "-n", "-o", str(stamp)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert recipe in proc.stdout, f"`{command}` runs:\n{proc.stdout}"


def test_layout_section_names_every_module_and_nothing_that_is_gone():
    """The Layout block lists each package and top-level module of vgcore/, every file of each
    subpackage (or a "one file per <kind>" that the registry covers), and every file it names exists."""
    from vgcore import registry

    block = re.search(r"^```\n(.*?)^```$", section(page("layout"), "Layout"), flags=re.S | re.M).group(1)
    vgcore_lines = block.split("\ntests/")[0]
    named = set(re.findall(r"\b([a-z_]+(?:\.py|/))", vgcore_lines)) - {"vgcore/"}
    heads = {m for ln in vgcore_lines.splitlines() for m in re.findall(r"^(?:vgcore/)?\s+([a-z_]+(?:\.py|/))\s", ln)}
    heads |= set(re.findall(r"\b([a-z_]+\.py)\b", next(ln for ln in vgcore_lines.splitlines() if " io.py " in ln)))
    package = ROOT / "vgcore"
    actual = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    actual |= {p.name + "/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert actual <= named, f"docs/guide/layout.md misses {sorted(actual - named)}"
    assert heads <= actual, f"docs/guide/layout.md names {sorted(heads - actual)}, which vgcore/ does not have"
    registered = {entry.split(":")[0] for table in (registry.LOSSES, registry.DATASETS, registry.BACKBONES)
                  for entry in table.values()}
    for sub in (p for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        files = {f.name for f in sub.glob("*.py") if f.name != "__init__.py"}
        lines = vgcore_lines.split(f" {sub.name}/ ", 1)[1].split("\n")
        text = lines[0]
        for ln in lines[1:]:  # continuation lines are indented further
            if not ln.startswith(" " * 20):
                break
            text += "\n" + ln
        listed = set(re.findall(r"\b([a-z_0-9]+\.py)\b", text))
        assert listed <= files, f"docs/guide/layout.md names {sorted(listed - files)} in {sub.name}/ that do not exist"
        per_kind = {f for f in files if f"vgcore.{sub.name}.{f[:-3]}" in registered} if "one file per" in text else set()
        unlisted = files - listed - per_kind
        assert not unlisted, f"docs/guide/layout.md's {sub.name}/ line misses {sorted(unlisted)}"
    for top in re.findall(r"^([A-Za-z_.]+(?:/|\.md|\.txt|\.yml))\s", block, flags=re.M):
        assert (ROOT / top).exists(), top


def test_the_make_targets_page_names_every_target_of_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):.*## ", makefile, flags=re.M)) - {"help"}
    page = (ROOT / "docs" / "guide" / "make-targets.md").read_text()
    listed = set(re.findall(r"^\| `make ([a-z-]+)", page, flags=re.M))
    assert targets <= listed, f"docs/guide/make-targets.md misses {sorted(targets - listed)}"


def test_the_readme_shows_the_demo_gallery_that_notebook_05_draws():
    """Issue 27: the README shows one retrieval gallery, the committed figure 05_retrieval declares."""
    from vgcore.report.outputs import ANALYSIS

    results = section(README, "Results")
    assert 'src="figures/demo/05_gallery.png"' in results
    assert "05_gallery" in {item.name for item in ANALYSIS["05_retrieval"]}
    assert (ROOT / "figures" / "demo" / "05_gallery.png").is_file()


def test_the_readme_says_which_claims_survive_the_fair_comparison_from_its_table():
    """The README's account of the fair comparison is the committed survival table's
    (vgcore.report.survival.survival_summary), verbatim; without a fair build it says there is none."""
    import pandas as pd

    from vgcore.report.survival import survival_summary

    table = ROOT / "figures" / "fair" / "tables" / "06_survival.csv"
    results = section(README, "Results")
    if not table.is_file():
        assert "`figures/fair/` does not exist yet" in " ".join(results.split())
        return
    stated = survival_summary(pd.read_csv(table))
    assert stated in results, f"README.md's fair-comparison list is not the committed table's; paste:\n{stated}"
    assert "figures/fair/06_survival.png" in results and "descriptive" in results
