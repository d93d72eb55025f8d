"""The documentation site: its generated pages stay current, every page is in the nav, and it builds
offline with ``mkdocs build --strict``, where a link to a missing page or heading fails the build."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from patchcfg.config import docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"


def mkdocs_available():
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed: `pip install -e '.[docs]'` (make install does)")
        pytest.skip("mkdocs is not installed: `pip install -e '.[docs]'` (make install does)")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``: its exit status and its messages."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, cwd=config.parent,
                          env=env, timeout=300)


def settings():
    return yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- generated pages


@pytest.mark.parametrize("page", docs.docs_pages(DOCS), ids=lambda p: str(p.relative_to(DOCS)))
def test_no_generated_block_of_a_page_is_stale(page):
    text = page.read_text(encoding="utf-8")
    new = docs.update_generated(text)
    stale = [name for name, (begin, end, _) in docs.GENERATED.items()
             if docs.generated_section(text, begin, end) != docs.generated_section(new, begin, end)]
    assert not stale, (f"{page.relative_to(ROOT)} shows an out-of-date {', '.join(stale)} "
                       f"(the site would say what the code no longer does): run `{docs.UPDATE_DOCS}`")


def test_every_generated_block_stands_in_one_page():
    holders = {name: [p.relative_to(DOCS).as_posix() for p in docs.docs_pages(DOCS)
                      if docs.generated_section(p.read_text(encoding="utf-8"), begin, end) is not None]
               for name, (begin, end, _) in docs.GENERATED.items()}
    assert holders == {
        "config reference": ["reference/config.md"],
        "augmentation recipe reference": ["data.md"],
        "query strategy table": ["active-learning.md"],
        "command-line reference": ["reference/cli.md"],
    }


def test_the_verbs_at_a_glance_name_every_command():
    """The hand-written table above the generated command-line reference leaves no command out."""
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    glance = page[page.index("## The verbs at a glance"):page.index("## Every command")]
    generated = docs.generated_section(page, docs.CLI_BEGIN, docs.CLI_END)
    paths = re.findall(r"^## (patchcfg(?: [\w-]+)+)$", generated, flags=re.M)
    groups = {" ".join(p.split()[:-1]) for p in paths}
    missing = [p for p in paths if p not in groups and f"`{p}" not in glance]
    assert paths and not missing, f"docs/reference/cli.md's verbs at a glance leave out {missing}"


# --------------------------------------------------------------------------- the nav


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    in_nav = docs.nav_pages(settings()["nav"])
    pages = [p.relative_to(DOCS).as_posix() for p in docs.docs_pages(DOCS)]
    assert sorted(set(pages) - set(in_nav)) == [], "pages that no menu of the site reaches: add them to mkdocs.yml's nav"
    assert sorted(set(in_nav) - set(pages)) == [], "entries of the site's menu that lead to no page"
    assert len(in_nav) == len(set(in_nav)), "a page stands twice in the site's menu"


def test_the_site_fetches_nothing_from_elsewhere():
    config = settings()
    assert config["theme"]["font"] is False, "the theme would fetch its web fonts"
    for key in ("extra_css", "extra_javascript", "repo_url"):
        assert not config.get(key), f"{key}: the site would load from elsewhere"


# --------------------------------------------------------------------------- the build


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    mkdocs_available()
    out = tmp_path_factory.mktemp("site")
    return build(MKDOCS_YML, out), out


def test_the_site_builds_strict_without_a_warning(site):
    result, _ = site
    assert result.returncode == 0, "`mkdocs build --strict` failed:\n" + result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_the_built_site_loads_no_script_font_or_style_from_elsewhere(site):
    _, out = site
    external = []
    for page in out.rglob("*.html"):
        for tag in re.findall(r"<(?:link|script|img)\b[^>]*>", page.read_text(encoding="utf-8")):
            if re.search(r'\b(?:src|href)="(?:https?:)?//', tag) and 'rel="canonical"' not in tag:
                external.append(f"{page.relative_to(out)}: {tag}")
    assert not external, "the site would not work offline:\n" + "\n".join(external[:10])


def test_the_site_has_every_page_the_api_and_the_changelog(site):
    _, out = site
    for page in docs.docs_pages(DOCS):
        assert (out / page.relative_to(DOCS).with_suffix(".html")).is_file(), page
    api = (out / "reference" / "api.html").read_text(encoding="utf-8")
    assert "patchcfg.config.load_config" in api and "patchcfg.label_table.read_label_table" in api
    assert ":func:" not in api, "the API page shows Sphinx roles as written"
    changelog = (out / "changelog.html").read_text(encoding="utf-8")
    release = re.search(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), flags=re.M).group(1)
    assert f">{release.strip()}<" in changelog, "the changelog page does not show CHANGELOG.md"


LINKS = {
    "a heading another page does not have": ("[there](b.md#nowhere)", "does not contain an anchor '#nowhere'"),
    "a heading this page does not have": ("[here](#nowhere)", "there is no such anchor on this page"),
    "a page that does not exist": ("[gone](gone.md)", "the target is not found among documentation files"),
}


@pytest.mark.parametrize("link", LINKS, ids=lambda k: k.replace(" ", "-"))
def test_a_link_to_what_does_not_exist_fails_the_build(tmp_path, link):
    """The site's own validation settings, on a tiny project: a reader would follow the link to
    nothing, so the strict build refuses it and names it."""
    mkdocs_available()
    written, message = LINKS[link]
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    config = {"site_name": "t", "nav": ["index.md", "b.md"], "validation": settings()["validation"],
              "markdown_extensions": ["toc"]}
    (project / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (project / "docs" / "index.md").write_text(f"# A\n\n{written}\n", encoding="utf-8")
    (project / "docs" / "b.md").write_text("# B\n\n## Here\n\n[back](index.md#a)\n", encoding="utf-8")
    result = build(project / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, f"a link to {link} built without complaint"
    assert message in result.stderr, result.stderr
    (project / "docs" / "index.md").write_text("# A\n\n[there](b.md#here)\n", encoding="utf-8")
    shutil.rmtree(tmp_path / "site")
    assert build(project / "mkdocs.yml", tmp_path / "site").returncode == 0


def test_a_page_left_out_of_the_nav_fails_the_build(tmp_path):
    mkdocs_available()
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    config = {"site_name": "t", "nav": ["index.md"], "validation": settings()["validation"]}
    (project / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (project / "docs" / "index.md").write_text("# A\n", encoding="utf-8")
    (project / "docs" / "orphan.md").write_text("# Orphan\n", encoding="utf-8")
    result = build(project / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and "orphan.md" in result.stderr, result.stderr
