"""Headless Chromium for the tests (Debian ``chromium``, tools/debian-packages.txt).

:func:`load_page` opens a local HTML file the way a person would, with no network: it
returns the DOM after load, the page's console messages (Chromium logs them to stderr
with ``--enable-logging=stderr``: ``...:CONSOLE(line)] "text", source: ...``, CSP
violations and script errors included) and how long the load took; with ``screenshot``
it also writes a PNG of the viewport (a ``#fragment`` in ``anchor`` scrolls to that part
of the page first). Chromium's own background requests are switched off and every host
name resolves to nothing, so a page that tried to fetch anything could not.

:func:`png_colours` counts the distinct colours of a PNG (a blank screenshot has one or
two), with Pillow (a matplotlib dependency).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Chromium's executable names on Debian and elsewhere.
CHROMIUM_NAMES: Final = ("chromium", "chromium-browser", "google-chrome")
DEFAULT_TIMEOUT_S: Final = 90.0
#: Wide as a laptop, tall enough for a report's first ladders to be on the screenshot.
DEFAULT_WINDOW: Final = (1280, 8000)
_FLAGS: Final = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr",
                 "--v=0")
_CONSOLE: Final = re.compile(r":(INFO|WARNING|ERROR|VERBOSE\d*):CONSOLE\(\d+\)\] (.*)")


@dataclass(frozen=True, slots=True)
class PageLoad:
    dom: str
    #: console messages of the page, as (level, text)
    console: tuple[tuple[str, str], ...]
    load_s: float
    stderr: str
    screenshot: Path | None = None

    @property
    def console_errors(self) -> list[str]:
        return [text for level, text in self.console if level in ("ERROR", "WARNING")]

    def screenshot_distinct_colours(self, box: tuple[int, int, int, int] | None = None) -> int:
        """Distinct colours of the screenshot (within ``box``); 0 without one."""
        return 0 if self.screenshot is None else png_colours(self.screenshot, box)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout_s: float) -> tuple[str, str, float]:
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="meshcomm-chromium-") as profile:
        started = time.monotonic()
        run = subprocess.run([chromium, *_FLAGS, f"--user-data-dir={profile}", *args],
                             capture_output=True, text=True, timeout=timeout_s,
                             check=False, stdin=subprocess.DEVNULL)
        took = time.monotonic() - started
    if run.returncode != 0:
        raise RuntimeError(f"chromium exited {run.returncode}: {run.stderr[-2000:]}")
    return run.stdout, run.stderr, took


def load_page(page: Path, screenshot: Path | None = None, *, anchor: str = "",
              window: tuple[int, int] = DEFAULT_WINDOW,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> PageLoad:
    """Load ``page`` (a local file) headless: DOM, console messages, load time; and a
    screenshot of the viewport when asked. Headless Chromium's screenshot does not follow
    a scroll to ``anchor`` (it comes out blank): the default window is tall instead, and
    :func:`colour_box` finds a part of the page on the picture."""
    url = page.resolve().as_uri()
    dom, stderr, took = _run(["--dump-dom", url], timeout_s)
    console = tuple((m.group(1), m.group(2)) for m in _CONSOLE.finditer(stderr))
    if screenshot is not None:
        _run([f"--screenshot={screenshot}", f"--window-size={window[0]},{window[1]}",
              url + (f"#{anchor}" if anchor else "")], timeout_s)
        if not screenshot.is_file():
            raise RuntimeError(f"chromium wrote no screenshot to {screenshot}")
    return PageLoad(dom, console, took, stderr, screenshot)


def png_colours(path: Path, box: tuple[int, int, int, int] | None = None) -> int:
    """Distinct colours in the PNG (within ``box``: left, top, right, bottom)."""
    from PIL import Image

    with Image.open(path) as image:
        region = image.convert("RGB") if box is None else image.convert("RGB").crop(box)
        colours = region.getcolors(maxcolors=1 << 24)
    return len(colours) if colours is not None else 1 << 24


def colour_box(path: Path, rgb: tuple[int, int, int], height: int,
               step: int = 2) -> tuple[int, int, int, int] | None:
    """The full-width band of ``height`` pixels from just above the first row holding
    ``rgb`` (e.g. a ladder's arrow colour), or None when no pixel has it."""
    from PIL import Image

    with Image.open(path) as image:
        picture = image.convert("RGB")
    width, total = picture.size
    pixels = picture.load()
    assert pixels is not None
    for y in range(0, total, step):
        if any(pixels[x, y] == rgb for x in range(0, width, step)):
            top = max(0, y - 80)
            return (0, top, width, min(total, top + height))
    return None
