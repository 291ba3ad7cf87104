"""The built book as a reader sees it: every page opened in headless Chromium, screenshotted.

``make book-check`` (after ``make book``) opens ``results/book/index.html``, every chapter
page, the glossary, the teacher's page and the figures page in Debian's Chromium (the same
browser set-up as ``tests/lab_check.py``), fails with one line when a page shows a Python
traceback or an image that did not load, and writes a full-page screenshot of each to
``results/book-check/`` for a person to look at.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

from lab_check import CheckFailed, chromium, import_selenium, require_chromium

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "results" / "book"
OUT = REPO / "results" / "book-check"
PAGES = ["index", "glossary", "teacher", "figures"]
BROKEN_IMAGES = "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0)" \
                ".map(i => i.getAttribute('src'))"


def pages() -> list[str]:
    """The book's pages in reading order: landing, chapters, then the reference pages."""
    manifest = json.loads((BOOK / "book.json").read_text())
    return ["index", *(c["name"] for c in manifest["chapters"]), *PAGES[1:]]


def full_page(driver, path: Path) -> None:
    """A screenshot of the whole page, not only the window (Chromium's DevTools protocol)."""
    size = driver.execute_script("return [document.documentElement.scrollWidth, "
                                 "document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "captureBeyondViewport": True, "format": "png",
        "clip": {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 16000), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def main() -> int:
    require_chromium()
    if not (BOOK / "book.json").exists():
        raise CheckFailed(f"{BOOK} has no book: run `make book` first")
    webdriver = import_selenium()
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as scratch, chromium(webdriver, Path(scratch)) as driver:
        driver.set_window_size(1400, 1000)
        for n, name in enumerate(pages(), start=1):
            driver.get((BOOK / f"{name}.html").as_uri())
            text = driver.find_element("tag name", "body").text
            if "Traceback (most recent call last)" in text:
                raise CheckFailed(f"{name}.html shows a Python traceback")
            broken = driver.execute_script(BROKEN_IMAGES)
            if broken:
                raise CheckFailed(f"{name}.html: images that did not load: {broken[:3]}")
            path = OUT / f"{n:02d}_{name}.png"
            full_page(driver, path)
            written.append(path)
    print("\n".join(str(p.relative_to(REPO)) for p in written))
    print(f"book-check: {len(written)} pages opened, no traceback, every image loaded")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as failed:
        print(f"book-check: {failed}", file=sys.stderr)
        sys.exit(failed.code)
