"""kiln report: the HTML renders in headless Chromium with the graph, the kernel table and the
roofline, a click on a group shows its TIR, and the console stays free of errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import kiln
from kiln import ops
from kiln.cli import main
from kiln.report import build_report, write_html

pytestmark = pytest.mark.report
MODELS = Path(os.environ.get("KILN_MODELS", ".cache/models"))


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def _graph() -> kiln.Graph:
    rng = np.random.default_rng(0)
    g = kiln.Graph("mlp")
    x = g.input("x", (33, 72), "float32")
    h = ops.gelu(ops.dense(x, rng.standard_normal((40, 72)).astype(np.float32)))
    g.output(ops.layer_norm(ops.softmax(h), np.ones(40, np.float32), np.zeros(40, np.float32)))
    return g


def check_renders(browser, page: Path, shot: Path, kernels: list[str], ends: int) -> None:
    """``page`` in Chromium: a node per kernel and graph input/output in the SVG graph, a row
    per kernel, the roofline, no console errors; a click on the first kernel's node shows its
    TIR; a screenshot that is not blank."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    browser.get(page.resolve().as_uri())
    nodes = browser.find_elements(By.CSS_SELECTOR, "#graph svg g.node")
    titles = {n.find_element(By.TAG_NAME, "title").get_attribute("textContent") for n in nodes}
    assert set(kernels) <= titles and len(nodes) == len(kernels) + ends
    rows = browser.find_elements(By.CSS_SELECTOR, "#kernels tr.kernel")
    assert sorted(r.get_attribute("data-kernel") for r in rows) == sorted(kernels)
    assert browser.find_elements(By.CSS_SELECTOR, "#roofline svg")
    node = next(n for n in nodes
                if n.find_element(By.TAG_NAME, "title").get_attribute("textContent") == kernels[0])
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click'))", node)
    assert browser.find_element(By.CSS_SELECTOR, "#details h3").text == kernels[0]
    assert "T.prim_func" in browser.find_element(By.ID, "tir").get_attribute("textContent")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    browser.save_screenshot(str(shot))
    with Image.open(shot) as img:
        low, high = img.convert("L").getextrema()
        assert img.size[0] >= 1000 and high - low > 100        # drawn, not blank


def test_report_renders(browser, tmp_path: Path) -> None:
    report = build_report(_graph())
    page = write_html(report, tmp_path / "mlp.html")
    assert {r.template for r in report.rows} == {"gemm", "row reduction"}
    check_renders(browser, page, tmp_path / "mlp.png", [r.name for r in report.rows], ends=2)


@pytest.mark.parametrize(("name", "shapes"), [
    ("paraphrase_minilm_l3", ["input_ids=1,128", "attention_mask=1,128"]),
    ("ppocr_mobile_v2_cls", ["x=1,3,48,192"]),
])
def test_real_model_report_renders(browser, tmp_path: Path, capsys: pytest.CaptureFixture,
                                   name: str, shapes: list[str]) -> None:
    model = MODELS / f"{name}.onnx"
    assert model.is_file(), f"fetch the models first: python tests/models/fetch.py {MODELS}"
    page = tmp_path / f"{name}.html"
    args = [a for s in shapes for a in ("--input-shape", s)]
    assert main(["report", str(model), "-o", str(page), *args]) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    c = kiln.compile_stages(model, input_shapes={
        s.split("=")[0]: tuple(map(int, s.split("=")[1].split(","))) for s in shapes})
    ends = len(c.optimized.inputs) + len(c.optimized.outputs)
    shot = Path(os.environ.get("KILN_REPORT_SHOTS", tmp_path)) / f"{name}.png"
    check_renders(browser, page, shot, [k.name for k in c.kernels], ends)
