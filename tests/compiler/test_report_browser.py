"""report.html in a real headless browser (Debian's chromium), from a real compile.

The page is rendered twice: `--dump-dom` (every section is in the DOM as the
browser parsed it, no console errors) and `--screenshot` (a non-blank PNG,
kept under build/test-artifacts/report_html/ for a person to look at). Skips,
saying why, where chromium is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main
from compiler.report_html import SECTION_IDS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parents[2] / "build" / "test-artifacts" / "report_html"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (apt-get install -y chromium; .ci/run installs it)",
)


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _console_errors(stderr: str) -> list[str]:
    """Chromium's log lines for the page's console errors and uncaught exceptions."""
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line and re.search(r"error|uncaught", line, re.I)
    ]


def _compile_and_render(model: str, tmp_path: Path, *flags: str) -> tuple[str, Path]:
    out = tmp_path / "out"
    args = ["compile", model, "--precision", "int8", "--report", "html", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, *flags])
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'}" in result.output.replace("\n", "")
    page = out / "report.html"

    dom = _chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_errors(dom.stderr)
    expected = [s for s in SECTION_IDS if s != "auto"]  # no auto without --precision auto
    for sid in expected:
        assert f'id="{sid}"' in dom.stdout, f"section {sid} not in the browser's DOM"
    assert 'class="verdict verdict-none"' in dom.stdout  # no budgets given
    assert dom.stdout.count("<svg") >= 2  # latency and size plots parsed as SVG

    png = tmp_path / f"{model}.png"
    shot = _chromium(
        page, tmp_path / "profile-shot", f"--screenshot={png}", "--window-size=1280,4000"
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert not _console_errors(shot.stderr)
    _assert_not_blank(png)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = ARTIFACTS / png.name
    shutil.copyfile(png, kept)
    shutil.copyfile(page, ARTIFACTS / f"{model}.html")
    print(f"screenshot: {kept}")
    return dom.stdout, kept


def _assert_not_blank(png: Path) -> None:
    from PIL import Image

    assert png.exists() and png.stat().st_size > 20_000
    with Image.open(png) as im:
        assert im.size == (1280, 4000)
        gray = im.convert("L")
        lo, hi = gray.getextrema()
        assert hi - lo > 100  # text and plots, not one colour
        # the verdict banner and plots reach well down the page
        top_half = gray.crop((0, 0, 1280, 1500))
        assert len(top_half.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50


def test_digits_cnn_int8_report_renders_in_chromium(tmp_path: Path) -> None:
    dom, _ = _compile_and_render("digits_cnn", tmp_path, "--threads", "2")
    assert "digits_cnn" in dom


@pytest.mark.slow
def test_mobilenet_v2_int8_report_renders_in_chromium(tmp_path: Path) -> None:
    dom, _ = _compile_and_render("mobilenet_v2", tmp_path)
    assert "mobilenet_v2" in dom and 'id="size-plot"' in dom
