"""Report directories: JSON merging, Markdown and HTML content, and the page opened in headless Chromium."""
import json
import math
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

from gfa_keras.reports import report_directory
from gfa_keras.evaluation.report import RobustnessReport

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network: without the background-networking ones Chromium's own
# connections are refused and logged.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-port=0", "--remote-allow-origins=*"]


def make_report(clean, worst, eps=(0.05, 0.1), with_norms=False, flags=(), standard=False):
    minimum_norm = {}
    if with_norms:
        minimum_norm = {"deepfool": {"median": 0.1, "mean": 0.12, "success_rate": 0.75,
                                     "norms": [0.0, 0.1, 0.14, math.inf]}}
    return RobustnessReport(
        clean_accuracy=clean, eps=list(eps), norm="linf", attacks=["apgd_ce", "square"],
        robust_accuracy={"apgd_ce": [w + 0.05 for w in worst], "square": list(worst)},
        attack_accuracy={"apgd_ce": [0.5] * len(eps), "square": [0.9] * len(eps)},
        worst_case_accuracy=list(worst), broken_by=[[None, "clean", "apgd_ce", None] for _ in eps],
        minimum_norm=minimum_norm, settings={"num_points": 4, "model_name": "m"}, flags=list(flags),
        standard=standard, standard_reasons=[] if standard else ["square: 1000 queries < 5000"],
    )


HISTORY = {"loss": [1.0, 0.6], "alignment_dense": [0.1, 0.4], "val_alignment_dense": [0.05, 0.3]}
LANDSCAPE = {"radii": [-1.0, 0.0, 1.0], "radial": [2.0, 1.0, 0.8], "tangential": [1.2, 1.0, 1.1]}
TUNING = {"objective": "val_tradeoff", "best_hyperparameters": {"penalty_weight": 0.01}, "trials": [
    {"trial_id": "0", "status": "COMPLETED", "hyperparameters": {"penalty_weight": 0.01, "tuner/epochs": 2},
     "clean_accuracy": 0.9, "robust_accuracy": 0.4, "objective": 0.65},
    {"trial_id": "1", "status": "FAILED", "hyperparameters": {"penalty_weight": 0.9, "tuner/epochs": 2},
     "clean_accuracy": None, "robust_accuracy": None, "objective": None},
]}


def full_report(directory):
    """Two models (one with every section) and tuning results: every plot kind."""
    flag = {"check": "iterative_beats_single_step", "status": "warn", "reason": "a <b>weaker</b> attack won"}
    report_directory.add_to_report(directory, "plain", robustness=make_report(0.9, [0.5, 0.25], standard=True),
                                   title="Digits <demo>")
    report_directory.add_to_report(directory, "gfa & co",
                                   robustness=make_report(0.85, [0.6, 0.35], with_norms=True, flags=[flag]),
                                   history=HISTORY, landscape=LANDSCAPE, training={"method": "gfa", "beta": 0.01})
    report_directory.add_to_report(directory, tuning=TUNING)
    return report_directory.render_report(directory)


def test_add_to_report_merges_models_and_replaces_a_section(tmp_path):
    report_directory.add_to_report(tmp_path, "a", robustness=make_report(0.9, [0.5, 0.2]))
    report_directory.add_to_report(tmp_path, "b", history=HISTORY)
    report_directory.add_to_report(tmp_path, "a", robustness=make_report(0.7, [0.4, 0.1]))
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["format"] == "gfa_keras.evaluation.report" and data["title"] == tmp_path.name
    assert sorted(data["models"]) == ["a", "b"]
    assert data["models"]["a"]["robustness"]["clean_accuracy"] == 0.7
    assert data["models"]["b"]["history"] == HISTORY
    # strict JSON: the infinite norm of a failed attack is null
    report_directory.add_to_report(tmp_path, "c", robustness=make_report(0.9, [0.5, 0.2], with_norms=True))
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["models"]["c"]["robustness"]["minimum_norm"]["deepfool"]["norms"][-1] is None


def test_model_sections_need_a_name(tmp_path):
    with pytest.raises(ValueError, match="model_name=None"):
        report_directory.add_to_report(tmp_path, robustness=make_report(0.9, [0.5, 0.2]))


def test_load_report_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No report.json"):
        report_directory.load_report(tmp_path)
    (tmp_path / "report.json").write_text('{"models": {}}')
    with pytest.raises(ValueError, match="format=None"):
        report_directory.load_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        report_directory.load_report(tmp_path)


def test_merge_reports_combines_models_and_refuses_duplicates(tmp_path):
    report_directory.add_to_report(tmp_path / "one", "plain", robustness=make_report(0.9, [0.5, 0.2]))
    report_directory.add_to_report(tmp_path / "two", "gfa", robustness=make_report(0.8, [0.6, 0.3]))
    report_directory.merge_reports([tmp_path / "one", tmp_path / "two"], tmp_path / "both", title="both")
    assert sorted(report_directory.load_report(tmp_path / "both")["models"]) == ["gfa", "plain"]
    with pytest.raises(ValueError, match="'plain' is in both"):
        report_directory.merge_reports([tmp_path / "one", tmp_path / "both"], tmp_path / "again")


def test_render_writes_markdown_tables_and_one_self_contained_page(tmp_path):
    paths = full_report(tmp_path)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["alignment_gfa_co.png", "loss_landscape.png", "minimum_norms.png", "robust_accuracy.png",
                    "tuning.png"]
    markdown = paths["markdown"].read_text()
    assert "| plain | 90.00% | 50.00% | 25.00% | apgd_ce, square | AutoAttack standard version | 4 | none |" \
        in markdown
    assert ("| gfa & co | 85.00% | 60.00% | 35.00% | apgd_ce, square | not the AutoAttack standard version "
            "(square: 1000 queries < 5000) | 4 | iterative_beats_single_step (warn) |") in markdown
    assert "| 0.1 | 40.00% | 35.00% | 35.00% |" in markdown  # gfa's cascade: apgd_ce, then square, worst case
    # The per-attack table, from the same table data as RobustnessReport.to_markdown, in both pages.
    assert "| apgd_ce | 0.1 | 3 | 1 | 50.00% |" in markdown
    assert all(f"]({name})" in markdown for name in pngs)
    assert "| 1 | FAILED | 0.9 | n/a | n/a | n/a |" in markdown and "tuner/epochs" not in markdown
    page = paths["html"].read_text()
    assert "<td>AutoAttack standard version</td><td>no: square: 1000 queries &lt; 5000</td>" in page
    assert "<td>AutoAttack standard version</td><td>yes</td>" in page
    assert page.count('<img src="data:image/png;base64,') == len(pngs)
    assert "src=\"http" not in page and "<script" not in page
    assert "<td>apgd_ce</td><td>0.1</td><td>3</td><td>1</td><td>50.00%</td>" in page
    assert "Digits &lt;demo&gt;" in page and "a &lt;b&gt;weaker&lt;/b&gt; attack won" in page


class Chromium:
    """Headless Chromium driven over the DevTools protocol: load a page, collect console errors."""

    def __init__(self, timeout=60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="gfa-chromium-")
        self.process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start (exit code {self.process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = json.load(no_proxy.open(f"http://127.0.0.1:{port}/json/list", timeout=timeout))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout,
                                                  suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                return message.get("result", {})
            self.events.append(message)

    def open(self, path):
        """Loads the page; returns [(complete, naturalWidth, naturalHeight)] per <img> and the console errors."""
        self.events.clear()
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(json.loads(self.socket.recv()))
        result = self.call("Runtime.evaluate", returnByValue=True, expression=(
            "JSON.stringify(Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight]))"))
        images = json.loads(result["result"]["value"])
        return images, [e for e in self.events if _is_error(e)]

    def close(self):
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


def _is_error(event):
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return True
    if method == "Runtime.consoleAPICalled":
        return params["type"] in ("error", "assert")
    return method == "Log.entryAdded" and params["entry"]["level"] == "error"


@pytest.fixture(scope="module")
def chromium():
    browser = Chromium()
    yield browser
    browser.close()


@pytest.mark.slow  # headless Chromium
def test_report_page_in_a_real_browser_loads_every_image_without_console_errors(tmp_path, chromium):
    paths = full_report(tmp_path)
    images, errors = chromium.open(paths["html"])
    assert len(images) == 5
    assert all(complete and width > 0 and height > 0 for complete, width, height in images), images
    assert errors == []


@pytest.mark.slow  # headless Chromium
def test_the_browser_check_catches_a_broken_image_and_a_console_error(tmp_path, chromium):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="missing.png"><script>console.error("boom")</script></body></html>')
    images, errors = chromium.open(page)
    assert images == [[True, 0, 0]]
    assert len(errors) == 2  # the failed image request and console.error
