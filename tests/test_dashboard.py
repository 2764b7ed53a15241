"""report.html in a real browser: no console error, one row per run, plots drawn, sorting works.

The browser test drives Debian's Chromium through chromedriver (selenium), offline: every host
name resolves to nothing, so a page that fetched anything would log a console error. It is
skipped where Chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rerank_sweeps.dashboard import markdown_html
from rerank_sweeps.report import build_report
from tests.test_report import _grid

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# The five plots of the grid: parallel coordinates, quality vs latency, arch, negatives, training.
PLOT_IDS = (
    "plot-parcoords",
    "plot-quality-latency",
    "plot-param-arch",
    "plot-param-negatives",
    "plot-training",
)


@pytest.fixture(scope="module")
def grid_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of the test grid (4 completed runs, 1 failed)."""
    root = tmp_path_factory.mktemp("grid")
    _grid(root)
    build_report(root)
    return root / "report.html"


def test_page_has_a_row_per_run_swept_columns_and_every_plot(grid_page: Path) -> None:
    page = grid_page.read_text()
    table = page.split('<table id="runs"')[1].split("</table>")[0]
    headers = re.findall(r"<th [^>]*>(.*?)</th>", table)
    assert headers[:6] == ["job", "sweep", "run", "arch", "negatives", "status"]
    assert "paths.root" not in " ".join(headers)  # differs between runs, but is no parameter
    assert "hit@5<br>hybrid" in headers and "nDCG@10<br>fts" in headers
    assert table.count("<tr data-filter=") == 5
    assert 'data-filter="arch=colbert negatives=4 failed"' in table
    assert "RuntimeError: CUDA out of memory" in table
    for plot_id in PLOT_IDS:
        assert f'id="{plot_id}"' in page
    assert 'id="plot-param-paths-root"' not in page


def test_markdown_tables_and_bullets_render_as_html() -> None:
    body = markdown_html("### t\n\n| a | b |\n|---|---|\n| **1** | `x` |\n- one\n- two\ntext")
    assert "<h3>t</h3>" in body
    assert "<tr><th>a</th><th>b</th></tr><tr><td><b>1</b></td><td><code>x</code></td></tr>" in (
        body.replace("\n", "")
    )
    assert "<ul><li>one</li><li>two</li></ul>" in body and "<p>text</p>" in body


@pytest.fixture(scope="module")
def browser(grid_page: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with the grid's report.html loaded and its plots drawn."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--enable-unsafe-swiftshader",  # software WebGL for the parallel coordinates
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Offline for certain: any fetch would fail and log a console error.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(grid_page.as_uri())
        WebDriverWait(driver, 60).until(
            lambda d: (
                d.execute_script("return document.querySelectorAll('.js-plotly-plot').length")
                == len(PLOT_IDS)
            )
        )
        yield driver
    finally:
        driver.quit()


def _column(driver: Any, header: str) -> list[str]:
    """The visible cells of the run table's column whose header starts with `header`."""
    return driver.execute_script(
        """
        const heads = Array.from(document.querySelectorAll('#runs thead th'));
        const i = heads.findIndex(h => h.textContent.startsWith(arguments[0]));
        return Array.from(document.querySelectorAll('#runs tbody tr'))
            .filter(r => !r.hidden).map(r => r.cells[i].textContent.trim());
        """,
        header,
    )


def _click_header(driver: Any, header: str) -> None:
    from selenium.webdriver.common.by import By

    heads = driver.find_elements(By.CSS_SELECTOR, "#runs thead th")
    next(h for h in heads if h.text.startswith(header)).click()


@pytest.mark.slow  # starts Chromium (once for the module)
def test_page_loads_without_console_errors(browser: Any) -> None:
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert browser.execute_script("return typeof Plotly") == "object"


@pytest.mark.slow  # starts Chromium (once for the module)
def test_run_table_has_one_row_per_run(browser: Any) -> None:
    assert _column(browser, "job") == ["0", "1", "2", "3", "4"]
    assert _column(browser, "status") == ["completed"] * 4 + [
        "failedRuntimeError: CUDA out of memory"
    ]


@pytest.mark.slow  # starts Chromium (once for the module)
def test_every_plot_is_drawn(browser: Any) -> None:
    drawn = browser.execute_script(
        "return arguments[0].map(id => document.querySelectorAll('#' + id + ' .main-svg').length)",
        list(PLOT_IDS),
    )
    assert all(n > 0 for n in drawn), dict(zip(PLOT_IDS, drawn, strict=True))
    assert (
        browser.execute_script("return document.querySelectorAll('#plot-parcoords .y-axis').length")
        == 3
    )
    # the quality vs latency plot: its axis says end to end, its Pareto front is a drawn line
    xtitle = browser.execute_script(
        "return document.querySelector('#plot-quality-latency .xtitle').textContent"
    )
    assert xtitle.startswith("end-to-end latency p50") and "50 candidates" in xtitle
    front = browser.execute_script(
        """
        const gd = document.getElementById('plot-quality-latency');
        const i = gd.data.findIndex(t => t.name === 'Pareto front');
        const path = gd.querySelectorAll('.scatterlayer .trace')[i].querySelector('path.js-line');
        return [gd.data[i].x.length, path ? path.getAttribute('d') : ''];
        """
    )
    # 3 points joined as a step: across, up, across, up (SVG H and V commands)
    assert front[0] == 3 and len(re.findall(r"[HVL]", front[1])) == 4
    # an integer parameter ticks at the values tried, with error bars on the points
    ticks = browser.execute_script(
        "return Array.from(document.querySelectorAll('#plot-param-negatives .xtick text'))"
        ".map(t => t.textContent)"
    )
    assert ticks == ["1", "2"]
    bars = browser.execute_script(
        "return document.querySelectorAll('#plot-param-negatives .errorbar').length"
    )
    assert bars == 4
    curves = browser.execute_script(
        "return document.querySelectorAll('#plot-training .scatterlayer .trace').length"
    )
    assert curves == 4


@pytest.mark.slow  # starts Chromium (once for the module)
def test_clicking_a_header_sorts_and_the_filter_hides_rows(browser: Any) -> None:
    _click_header(browser, "objective")
    # ascending by objective; the failed run has none and stays last in both directions
    assert _column(browser, "job") == ["3", "0", "2", "1", "4"]
    _click_header(browser, "objective")
    assert _column(browser, "job") == ["1", "2", "0", "3", "4"]
    _click_header(browser, "run")
    assert _column(browser, "run")[:2] == ["ce-minilm-1neg-1ep", "ce-minilm-2neg-1ep"]
    box = browser.find_element("id", "run-filter")
    box.send_keys("colbert")
    assert sorted(_column(browser, "job")) == ["2", "3", "4"]
    box.clear()
    box.send_keys("negatives=2 completed")
    assert sorted(_column(browser, "job")) == ["1", "3"]
    assert browser.find_element("id", "run-count").text == "2 of 5 runs"
