"""Citations point into the repository: code and docs cite `docs/*.md` (and their
sections), never a document that lives outside it, and every cited page and section
exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Spelled in pieces so this file does not match itself.
OUTSIDE_CITATIONS = ("DESIGN" + " §", ".." + "/shared", "/work" + "/shared")

# `docs/design.md` or `docs/design.md#lock-order`, wherever it is written.
DOC_CITATION = re.compile(r"\bdocs/([a-z-]+\.md)(?:#([a-z0-9_-]+))?")
# A relative markdown link inside docs/: `[text](recovery.md#each-fault)`.
DOC_LINK = re.compile(r"\]\(([a-z-]+\.md)(?:#([a-z0-9_-]+))?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def tracked_texts() -> dict[str, str]:
    """Every tracked (or new, not ignored) text file, by its path in the repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True,
                            check=True, timeout=60).stdout.decode()
    texts = {}
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
    return texts


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    found = set()
    for title in HEADING.findall(markdown):
        slug = re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_slugs_follow_githubs_rule() -> None:
    assert anchors("## NOTIFY is a hint\n### Exactly-once completion\n# `x` y: z\n") == {
        "notify-is-a-hint", "exactly-once-completion", "x-y-z"}


def test_nothing_cites_a_document_outside_the_repository() -> None:
    texts = tracked_texts()
    assert "docs/design.md" in texts  # the listing works: there is something to check
    offenders = [f"{name}:{number}: {line.strip()}"
                 for name, text in texts.items()
                 for number, line in enumerate(text.splitlines(), 1)
                 if any(cite in line for cite in OUTSIDE_CITATIONS)]
    assert offenders == [], "cite docs/<page>.md instead:\n" + "\n".join(offenders)


def test_every_cited_page_and_section_exists() -> None:
    texts = tracked_texts()
    pages = {name.removeprefix("docs/"): text for name, text in texts.items()
             if name.startswith("docs/") and name.endswith(".md") and name.count("/") == 1}
    cited: list[tuple[str, int, str, str]] = []
    for name, text in texts.items():
        for number, line in enumerate(text.splitlines(), 1):
            cited += [(name, number, page, anchor)
                      for page, anchor in DOC_CITATION.findall(line)]
            if name.startswith("docs/") and name.endswith(".md"):
                cited += [(name, number, page, anchor)
                          for page, anchor in DOC_LINK.findall(line)]
    assert len(cited) > 20  # the patterns still find the citations there are
    missing = [f"{name}:{number}: docs/{page}" + (f"#{anchor}" if anchor else "")
               for name, number, page, anchor in cited
               if page not in pages or (anchor and anchor not in anchors(pages[page]))]
    assert missing == [], "cited but not there:\n" + "\n".join(missing)
