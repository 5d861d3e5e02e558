"""The HTML report: its tables equal the store, it requests nothing outside its folder,
and a real headless Chromium loads it with no console error and every image shown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from study.analysis import KINDS, PlotDataError, write_report
from study.analysis._tables import leaderboard_table
from study.store import load

ERROR = "RuntimeError: loss of <depth> & 'normals' is NaN"  # conftest.ERROR


@pytest.fixture(scope="module")
def report(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the whole store, one study of which has its spec stored, as a real
    study does."""
    root = tmp_path_factory.mktemp("report") / "results"
    shutil.copytree(store, root)
    spec = Path(__file__).parents[3] / "study" / "specs" / "demo.yaml"
    shutil.copy(spec, root / "hard_sharing-seed0" / "spec.yaml")
    return write_report(root, root.parent / "report.html")


@pytest.fixture(scope="module")
def text(report: Path) -> str:
    return report.read_text(encoding="utf-8")


def _static(text: str) -> str:
    """The report less its interactive block (its one script loads plotly.min.js beside the
    report; the browser test checks that it requests nothing else)."""
    return re.sub(r'<details class="interactive".*?</details>', "", text, flags=re.S)


def test_report_is_self_contained(text: str) -> None:
    assert text.startswith("<!DOCTYPE html>")
    images = re.findall(r'<img src="([^"]*)"', text)
    assert len(images) == len(KINDS)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    text = _static(text)
    assert 'id="plot-importance"' in text  # only the interactive block was cut
    assert "<script" not in text
    # No address outside the file: only data: URIs (and in-page anchors).
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "http://" not in text and "https://" not in text


def test_leaderboard_is_the_completed_trials_best_first_after_the_baselines(
    store: Path, text: str
) -> None:
    trials = load(store, "trials")
    table = leaderboard_table(trials)
    done = trials[(trials["kind"] == "multi_task") & (trials["status"] == "completed")]
    multi = table[table["rank"] > 0]
    assert list(multi["trial_id"]) == list(done.sort_values("delta_m", ascending=False)["trial_id"])
    assert list(multi["rank"]) == list(range(1, len(done) + 1))
    by_id = done.set_index("trial_id")
    for column in ("final.semseg.miou", "final.depth.rmse", "delta_m", "gflops"):
        assert list(multi[column]) == pytest.approx(list(by_id.loc[multi["trial_id"], column]))
    assert list(multi["params_m"]) == pytest.approx(
        list(by_id.loc[multi["trial_id"], "params"] / 1e6)
    )
    reference = table[table["rank"] == 0].iloc[0]
    assert reference["method"] == "single-task" and reference["delta_m"] == 0
    semseg = trials.set_index("trial_id").loc[reference["trial_id"].split(", ")[0]]
    assert reference["final.semseg.miou"] == pytest.approx(semseg["final.semseg.miou"])
    # The paper format: each task over its metrics, with directions.
    for header in ("semantic seg.", "mIoU ↑", "pixel acc. ↑", "RMSE (m) ↓", "δ&lt;1.25 ↑"):
        assert header in text
    assert "Δm (%) ↑" in text
    for trial_id in ("x-stopped", "x-running"):
        assert trial_id not in text


def test_best_trial_and_failed_trials(store: Path, text: str) -> None:
    trials = load(store, "trials")
    done = trials[(trials["kind"] == "multi_task") & (trials["status"] == "completed")]
    best = done.loc[done["delta_m"].idxmax()]
    section = text[text.index("<h2>Best trial</h2>") : text.index("<h2>Failed trials</h2>")]
    assert best["trial_id"] in section and f"{best['delta_m']:+.2f}" in section
    assert f"{best['hp.optim.lr']:.4g}" in section
    failed = text[text.index("<h2>Failed trials</h2>") : text.index("<h2>Plots</h2>")]
    assert "x-error" in failed
    assert "RuntimeError: loss of &lt;depth&gt; &amp; &#x27;normals&#x27; is NaN" in failed
    assert ERROR not in text  # every string is escaped


def test_spec_section_reconstructs_the_study(text: str) -> None:
    section = text[text.index("<h2>Study</h2>") : text.index("<h2>Leaderboard</h2>")]
    for value in ("semseg, depth", "hard_sharing, rcm_resnet", "amtl, dwa, ew", "0, 1"):
        assert value in section
    assert "synthetic:32px:5c:64+16:4obj:seed0" in section


def test_no_multi_task_trial_is_an_error_and_a_failed_write_keeps_the_old_report(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "results"
    (root / "only" / "trials").mkdir(parents=True)
    for path in (store / "hard_sharing-seed0" / "trials").glob("b-*.parquet"):
        shutil.copy(path, root / "only" / "trials" / path.name)
    out = tmp_path / "report.html"
    out.write_text("old")
    with pytest.raises(PlotDataError, match="no multi-task trials"):
        write_report(root, out)

    def broken(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_report(store / "hard_sharing-seed0", out)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results"]


# --------------------------------------------------------------------------- Chromium


_INSTALL_LOCK = Path("/tmp/mtlstudy-chromium-install.lock")


def _chromium() -> str:
    """The chromium binary; installed with apt-get (Debian's `chromium`) the first time."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed, and installing it needs apt-get as root")
    fd = os.open(_INSTALL_LOCK, os.O_CREAT | os.O_RDWR)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)  # one install at a time, across test processes
        if shutil.which("chromium") is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
                done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    pytest.skip(f"could not install chromium ({' '.join(command)}: {last})")
    finally:
        os.close(fd)
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium, but it is not on PATH")
    return found


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A headless Chromium with the DevTools protocol on; yields its page's websocket URL."""
    binary = _chromium()
    profile = tmp_path_factory.mktemp("chromium")
    process = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        yield asyncio.run(_page_socket(port))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def _page_socket(port: int) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            await asyncio.sleep(0.1)
    raise AssertionError("chromium has no page target")


_IMAGES_SHOW = (
    "Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth,"
    " shown: i.getBoundingClientRect().width}))"
)


async def _render(socket: str, url: str, width: int = 1400, probe: str = "null") -> dict[str, Any]:
    """Load ``url`` in a window ``width`` CSS pixels wide; return its console messages,
    errors, requests and images, and the value of the JavaScript expression ``probe``."""
    import aiohttp

    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(socket, max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params: Any) -> dict[str, Any]:
                number = next(ids)
                await ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
                while True:
                    message = json.loads((await ws.receive(timeout=60)).data)
                    if message.get("id") == number:
                        if "error" in message:
                            raise AssertionError(f"{method}: {message['error']}")
                        return message.get("result", {})
                    events.append(message)

            for domain in ("Page", "Runtime", "Log", "Network"):
                await call(f"{domain}.enable")
            await call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + 60
            while not any(e.get("method") == "Page.loadEventFired" for e in events):
                assert time.monotonic() < deadline, "the page did not finish loading"
                events.append(json.loads((await ws.receive(timeout=60)).data))
            await asyncio.sleep(0.5)  # late console messages
            result = await call("Runtime.evaluate", expression=_IMAGES_SHOW, returnByValue=True)
            probed = await call("Runtime.evaluate", expression=probe, returnByValue=True)
            # Drain what arrived meanwhile.
            await call("Runtime.evaluate", expression="1")
    console = [
        e["params"]
        for e in events
        if e.get("method") in ("Runtime.consoleAPICalled", "Log.entryAdded")
    ]
    return {
        "errors": [
            p
            for p in console
            if p.get("type") in ("error", "assert") or p.get("entry", {}).get("level") == "error"
        ],
        "exceptions": [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"],
        "requests": [  # shortened: a data: URI is the whole image
            e["params"]["request"]["url"][:80]
            for e in events
            if e.get("method") == "Network.requestWillBeSent"
        ],
        "failed": [e["params"] for e in events if e.get("method") == "Network.loadingFailed"],
        "images": result["result"]["value"],
        "probe": probed["result"].get("value"),
    }


def test_chromium_shows_every_image_with_no_console_error(browser: str, report: Path) -> None:
    page = asyncio.run(_render(browser, report.as_uri()))
    assert page["errors"] == [] and page["exceptions"] == [] and page["failed"] == []
    images = page["images"]
    assert len(images) == len(KINDS)
    assert all(i["complete"] and i["width"] > 0 and i["shown"] > 0 for i in images)
    # Nothing but the file itself and its data: URIs.
    assert all(u.startswith(("file:", "data:")) for u in page["requests"])


# The page's width against the window's, and the leaderboard's box: its widths, and where
# its method cell is before and after scrolling the box to its right end.
_LAYOUT = """(() => {
  const page = document.documentElement;
  const box = document.querySelector("table.leaderboard").parentElement;
  const cell = box.querySelector("tbody td.pinned");
  const before = cell.getBoundingClientRect().left - box.getBoundingClientRect().left;
  box.scrollLeft = box.scrollWidth;
  const after = cell.getBoundingClientRect().left - box.getBoundingClientRect().left;
  const spec = document.querySelector("#spec ~ details");
  return {page: page.scrollWidth, window: page.clientWidth, box: box.clientWidth,
          table: box.scrollWidth, overflow: getComputedStyle(box).overflowX,
          position: getComputedStyle(cell).position, before, after,
          scrolled: box.scrollLeft, spec_open: spec ? spec.open : null,
          spec_last: spec ? !spec.nextElementSibling : null,
          last_h2: Array.from(document.querySelectorAll("h2")).pop().textContent};
})()"""


@pytest.mark.parametrize("width", [1400, 700])
def test_the_page_fits_the_window_and_the_leaderboard_scrolls_in_its_box(
    browser: str, report: Path, width: int
) -> None:
    """Nothing makes the page wider than a 1400-px (or 700-px) window: a leaderboard wider
    than its box scrolls inside it with the method column pinned; the spec is last, folded."""
    page = asyncio.run(_render(browser, report.as_uri(), width, _LAYOUT))
    assert page["errors"] == [] and page["exceptions"] == []
    layout = page["probe"]
    assert layout["page"] <= layout["window"] <= width, layout
    assert layout["box"] <= layout["window"]
    assert layout["overflow"] == "auto" and layout["position"] == "sticky"
    if layout["table"] > layout["box"]:
        assert layout["scrolled"] > 0 and layout["after"] == pytest.approx(0, abs=1)
    assert layout["spec_open"] is False and layout["spec_last"] is True
    assert layout["last_h2"] == "Spec"
    if width == 700:  # the narrow window does overflow the table: the box scrolls
        assert layout["table"] > layout["box"] and layout["before"] > 0


_PLOTLY = """Array.from(document.querySelectorAll(".js-plotly-plot")).map(p => ({
  traces: p.data.length, axes: p.layout.xaxis.ticktext,
  study: p.closest("[data-study]").dataset.study,
  svg: p.querySelectorAll("svg.main-svg").length,
  ticks: Array.from(p.querySelectorAll("svg g.xtick text")).map(t => t.textContent),
  lines: p.querySelectorAll("svg g.trace.scatter path.js-line").length}))"""


def test_the_interactive_parallel_coordinates_are_optunas_from_the_journal(
    browser: str, report: Path, text: str
) -> None:
    """With plotly installed, each journal's Optuna study is drawn by Optuna's
    plot_parallel_coordinate; Chromium renders it, as SVG, with no error and no request
    but plotly.min.js beside the report, which keeps the report itself small."""
    assert text.count('<div class="interactive" data-study=') == 2  # two journals
    section = text[text.index('id="plot-parallel"') : text.index('id="plot-importance"')]
    assert 'id="plot-parallel-interactive"' in section
    assert text.count('<script charset="utf-8" src="plotly.min.js">') == 1
    # plotly.js inlined made the report over 6 MB; now the figures' block is 30 kB and the
    # report is mostly its PNGs (1.35 MB here).
    assert len(section) - len(_static(section)) < 100_000
    assert report.stat().st_size < 2_000_000
    library = report.parent / "plotly.min.js"
    assert library.stat().st_size > 3_000_000
    page = asyncio.run(_render(browser, report.as_uri(), probe=_PLOTLY))
    assert page["errors"] == [] and page["exceptions"] == [] and page["failed"] == []
    files = {u for u in page["requests"] if not u.startswith("data:")}
    assert files == {report.as_uri(), library.as_uri()}
    plots = page["probe"]
    assert len(plots) == 2 and {p["study"] for p in plots} == {"multi_task"}
    # Drawn: an SVG axis label per parameter, an SVG path per trial's line.
    assert all(p["svg"] > 0 and p["ticks"] == p["axes"] for p in plots), plots
    assert sorted(p["lines"] for p in plots) == [2, 8], plots
    # hard_sharing-seed0's journal (8 trials, every method) and rcm_resnet-seed0's (2):
    # each parameter an axis, a method's own only where a trial sampled it.
    axes = sorted((p["axes"] for p in plots), key=len)
    assert axes[0] == [
        "Objective Value",
        "dwa/temperature",
        "method",
        "model/head_channels",
        "optim/lr",
        "optim/weight_decay",
    ]
    assert {"amtl/gamma", "amtl/margin", "dwa/temperature"} <= set(axes[1])
    assert max(p["traces"] for p in plots) > 8  # a line per trial (and the colour bar)


def test_the_browser_check_sees_a_broken_page(browser: str, tmp_path: Path) -> None:
    """The same check on a page with a broken image and a console error fails."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="missing.png"><script>console.error("boom")</script></body></html>'
    )
    page = asyncio.run(_render(browser, broken.as_uri()))
    assert any("boom" in json.dumps(e) for e in page["errors"])
    assert page["images"] == [{"complete": True, "width": 0, "shown": page["images"][0]["shown"]}]


def test_leaderboard_table_of_a_store_without_baselines(store: Path) -> None:
    trials = load(store, "trials")
    without = trials.drop(columns=[c for c in trials if c.startswith("baseline_trials.")])
    table = leaderboard_table(without)
    assert (table["rank"] > 0).all() and isinstance(table, pd.DataFrame)


def test_over_seeds_section_shows_each_configuration_and_the_comparison(
    repeat_rows: Callable[..., list[dict]],
) -> None:
    import pandas as pd

    from study.analysis._report import _seeds_section

    rows = [
        {**row, "pareto": row["config_id"] == "a"}
        for row in repeat_rows("a", "dwa", [2.0, 4.0]) + repeat_rows("b", "ew", [1.0, 1.0])
    ]
    html = _seeds_section(pd.DataFrame(rows), limit=10)
    assert "<h2>Over seeds</h2>" in html
    assert "<td>3</td><td>1.414</td><td>yes</td>" in html  # a: mean 3, sd √2, on the front
    assert "dwa (hard_sharing) vs ew (hard_sharing)" in html
    assert "paired BCa bootstrap" in html and "permutation" in html
    single = pd.DataFrame(rows).assign(config_id=lambda t: t["trial_id"])
    assert _seeds_section(single, limit=10) == ""


def test_weights_caption_says_whose_achievements_are_drawn(store: Path, text: str) -> None:
    from study.analysis import Plot, load_results, make_plot
    from study.analysis._report import _caption

    figure = text[text.index('<figure id="plot-weights">') :]
    caption = figure[figure.index("<figcaption>") : figure.index("</figcaption>")]
    assert "the achievements of amtl" in caption and "not recorded" not in caption
    plot = make_plot("weights", load_results(store / "hard_sharing-seed0"))
    assert plot.data is not None
    weights_only = Plot("weights", plot.figure, plot.data[plot.data["metric"] == "weight"])
    assert "No method here records achievements" in _caption("weights", weights_only)
