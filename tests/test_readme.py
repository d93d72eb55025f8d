"""The README is the front door: the two commands first, a short quickstart, one picture and a link
to every page of the documentation, and no link that leads nowhere."""

import re
from pathlib import Path

import yaml
from markdown.extensions.toc import slugify

from patchcfg.config.docs import nav_pages

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def readme_lines():
    return README.read_text(encoding="utf-8").splitlines()


def relative_links(text):
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def headings_anchors(path):
    """The anchors of a Markdown page's headings, as the site makes them (toc's slugify)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slugify(re.sub(r"`", "", m), "-") for m in re.findall(r"^#+\s+(.*?)\s*#*$", text, flags=re.M)}


def test_first_lines_give_demo_and_test():
    head = "\n".join(readme_lines()[:6])
    assert "make demo" in head and "make test" in head, "the README's first 6 lines must show `make demo` and `make test`"


def test_the_readme_is_at_most_200_lines():
    assert len(readme_lines()) <= 200, (
        f"the README has {len(readme_lines())} lines: move what is past the front door to a page under docs/")


def test_the_suite_size_and_time_stand_on_one_line():
    lines = [line for line in readme_lines() if line.startswith("The suite: ")]
    assert len(lines) == 1, "the README needs one line 'The suite: N tests in X min Y s on 2 cores'"
    assert re.match(r"The suite: [\d,]+ tests in \d+ min \d+ s on 2 cores", lines[0]), lines[0]


def test_every_relative_link_of_the_readme_leads_somewhere():
    broken = []
    for target in relative_links(README.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        resolved = ROOT / path if path else README
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in headings_anchors(resolved):
            broken.append(f"{target}: {path or 'README.md'} has no heading #{anchor}")
    assert not broken, "the README links to what is not there:\n" + "\n".join(broken)


def test_the_readme_shows_a_picture_of_the_labelling_page():
    pictures = [t for t in relative_links(README.read_text(encoding="utf-8")) if t.endswith(".png")]
    assert pictures and all((ROOT / p).is_file() for p in pictures)


def test_the_readme_links_every_page_of_the_site():
    """What left the README is a page of the site, and the README says where: a link to each page
    of the nav (a page that only includes a file, the changelog, by a link to that file)."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    links = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(README.read_text(encoding="utf-8"))}
    unlinked = []
    for page in nav_pages(nav):
        if page == "index.md":
            continue  # the site's home is what the README itself says
        path = ROOT / "docs" / page
        include = re.fullmatch(r'--8<-- "([^"]+)"\s*', path.read_text(encoding="utf-8"))
        target = ROOT / include.group(1) if include else path
        if target.resolve() not in links:
            unlinked.append(f"docs/{page}")
    assert not unlinked, f"pages of the site that the README does not link to: {unlinked}"
