"""`bsmfusion explain` writes JSONL and self-contained pages; a real headless Chromium shows the planted message
shaded red."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bsmfusion.cli import main
from bsmfusion.data.io import write_table
from tests.helpers import frame_for

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1000, 2400)


@pytest.fixture
def report(bundle_factory, tmp_path):
    """(out folder, explained frame): `bsmfusion explain` on 8 planted threads with the tfidf_lr thread bundle."""
    frame = frame_for("thread", 8, 5)
    write_table(frame, tmp_path / "t.csv")
    bundle = bundle_factory("tfidf_lr", signal="thread", rows=(300, 120))
    assert main(["explain", "--model", str(bundle.path), "--data", str(tmp_path / "t.csv"), "--out",
                 str(tmp_path / "why"), "--rows", "6"]) == 0
    return tmp_path / "why", frame


def planted_row(frame) -> int:
    return int(np.flatnonzero(frame["planted_message"].to_numpy()[:6] >= 0)[0])


@pytest.mark.slow
def test_explain_writes_one_record_and_one_self_contained_page_per_row(report):
    out, frame = report
    records = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(6))
    assert {"score", "decision", "text_contribution", "tab_contribution", "baseline", "messages", "features"} <= set(records[0])
    assert records[0]["messages"][0].keys() >= {"index", "role", "text", "contribution", "stderr"}
    pages = sorted((out / "rows").glob("*.html"))
    assert len(pages) == 6 and "rows/row-5.html" in (out / "index.html").read_text()
    for page in [*pages, out / "index.html"]:
        assert not re.search(r"(src|href)=['\"]?(https?:)?//", page.read_text())  # no external assets
    row = planted_row(frame)
    planted = frame["planted_message"].iloc[row]
    html = (out / "rows" / f"row-{row}.html").read_text()
    element = re.search(rf"<div class='msg' data-index='{planted}'[^>]*style='background:rgba\((\d+),(\d+),(\d+),", html)
    assert element and int(element.group(1)) > int(element.group(3))  # red: toward the positive class


def chromium(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="no /usr/bin/chromium: run `make browser` (apt-get install chromium)")
def test_chromium_shows_the_planted_message_shaded_red(report, tmp_path):
    out, frame = report
    row = planted_row(frame)
    page = (out / "rows" / f"row-{row}.html").resolve()
    dom = chromium("--dump-dom", page.as_uri()).stdout
    planted = int(frame["planted_message"].iloc[row])
    rect = re.search(rf"data-index=\"{planted}\"[^>]*data-rect=\"(\d+),(\d+),(\d+),(\d+)\"", dom)
    assert rect, dom[:2000]
    left, top, width, height = map(int, rect.groups())
    assert width > 100 and height > 10 and top + height < WINDOW[1]  # laid out and inside the screenshot
    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", page.as_uri())
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    r, g, b = image.getpixel((left + 4, top + height // 2))  # the padding left of the role: background only
    assert r > b + 60 and r > g + 60, (r, g, b)
    others = [m for m in re.finditer(r"data-index=\"(\d+)\"[^>]*data-rect=\"(\d+),(\d+),(\d+),(\d+)\"", dom)
              if int(m.group(1)) != planted]
    for m in others:  # no other message is redder than the planted one
        x, y, h = int(m.group(2)), int(m.group(3)), int(m.group(5))
        other = image.getpixel((x + 4, y + h // 2))
        assert other[0] - other[2] < r - b, (m.group(1), other, (r, g, b))
