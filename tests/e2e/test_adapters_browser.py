"""End-to-end, in Debian's chromium: a DICOM file through the browser's .dcm box, analysed with a few-shot
adapter chosen in the Analyse tab (zero-shot and adapted shown side by side), and the Cases tab's
"Build adapter" with nothing reviewed yet. Skipped only when /usr/bin/chromium is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.local_server import CHROMIUM, CHROMIUM_ARGS, free_port, start_app, stop_app, wait_http

from ..test_dicom import write_dicom
from .test_browser import choose, open_tab, shot, wait_text

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def test_dicom_with_adapter_and_build_without_reviews(default_model, tmp_path):
    from playwright.sync_api import sync_playwright

    from engine.adapt import Adapter
    from engine.prompts import PromptSet
    from engine.synth import render_fundus

    ps = PromptSet.from_dict({"normal": ["a normal healthy fundus"], "glaucoma": ["a large optic cup"],
                              "cataract": ["a hazy blurred fundus"]})
    items = [(p, c) for c in ps.classes for p in sorted(EXAMPLES.glob(f"synthetic_{c}_*.png"))]
    adapter = Adapter.fit(default_model, default_model.encode_images([p for p, _ in items]), [c for _, c in items], ps,
                          method="linear-probe")
    (tmp_path / "adapters").mkdir()
    adapter.save(tmp_path / "adapters" / "mine.safetensors")
    dcm = write_dicom(tmp_path / "exam.dcm", render_fundus(4, 256).image, ImageLaterality="R")

    port = free_port()
    (tmp_path / "apptmp").mkdir()
    proc = start_app(port, tmp_path / "cases.db", tmp_path / "app.log", tmpdir=tmp_path / "apptmp")
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.wait_for_selector("#analyse-btn", timeout=60_000)
            choose(page, "adapter-dd", "mine.safetensors")
            wait_text(page, "#adapter-md", "linear-probe adapter fitted on 3 real images")
            page.locator("#dicom-in input[type=file]").set_input_files(str(dcm))
            wait_text(page, "#analyse-status", "Adapted")
            wait_text(page, "#analyse-status", "DICOM laterality: right eye")
            wait_text(page, "#compare-df", "zero-shot")
            assert "Doe" not in page.locator("body").inner_text()
            shot(page, "adapter_dicom")

            open_tab(page, "Cases")
            page.get_by_text("Build adapter from reviewed cases").click()
            page.locator("#adapter-build").click()
            wait_text(page, "#adapter-status", "no agreed or corrected")
            browser.close()
        assert not errors, errors
    finally:
        stop_app(proc)
