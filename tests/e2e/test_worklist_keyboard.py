"""End-to-end: a 5-image worklist read twice (Ann, then Bob) with the keyboard only, in Debian's chromium.

Checks the navigation keys, resume, that the second reader does not see the first reader's verdicts, the
inter-reader kappa on the page, and the CSV export row by row. Skipped only when /usr/bin/chromium is absent.
"""
from __future__ import annotations

import csv

import pytest

from tests.local_server import CHROMIUM, free_port, start_app, stop_app, wait_http
from visionclip_app.store import CaseStore

from .test_browser import choose, open_tab, shot, text_of, wait_text

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed")
ANN = "aauau"
BOB = "auuaa"
VERDICT = {"a": "agree", "u": "ungradable"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from PIL import Image

    from engine.synth import render_fundus
    tmp = tmp_path_factory.mktemp("wl")
    root = tmp / "root"
    (root / "clinic").mkdir(parents=True)
    paths = []
    for i, cond in enumerate(["normal", "glaucoma", "dr", "amd", "cataract"]):
        paths.append(root / "clinic" / f"eye_{i}.png")
        Image.fromarray(render_fundus(40 + i, 192, [cond]).image).save(paths[-1])
    CaseStore(tmp / "cases.db").create_worklist("keyboard", paths, readings=2, source="folder")
    port = free_port()
    proc = start_app(port, tmp / "cases.db", tmp / "app.log", extra=["--data-root", str(root)])
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        yield {"url": f"http://127.0.0.1:{port}/", "db": tmp / "cases.db", "dir": tmp}
    finally:
        stop_app(proc)


def read_all(page, reviewer: str, keys: str) -> None:
    page.locator("#wl-reviewer input, #wl-reviewer textarea").first.fill(reviewer)
    page.locator("#wl-open").click()
    wait_text(page, "#wl-item", "Image 1 of 5")
    page.locator("#wl-progress").click()  # the focus leaves the text field: keys now drive the worklist
    for i, key in enumerate(keys, start=1):
        assert "Ann" not in text_of(page, "#wl-item") and "Ann" not in text_of(page, "#wl-status")
        page.keyboard.press(key)
        wait_text(page, "#wl-status", f"Image {i}: {VERDICT[key]} saved")
        if i < len(keys):
            wait_text(page, "#wl-item", f"Image {i + 1} of 5")


def test_double_reading_with_the_keyboard(app, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app["url"], wait_until="load")
    open_tab(page, "Worklist")
    choose(page, "wl-select", "#1 keyboard (double reading)")

    # navigation keys, before any reading: N, N, P, then J (next unreviewed) from image 2 is image 3
    page.locator("#wl-open").click()
    wait_text(page, "#wl-item", "Image 1 of 5")
    page.locator("#wl-progress").click()
    for key, pos in (("n", 2), ("ArrowRight", 3), ("p", 2), ("j", 3), ("ArrowLeft", 2)):
        page.keyboard.press(key)
        wait_text(page, "#wl-item", f"Image {pos} of 5")

    read_all(page, "Ann", ANN)
    wait_text(page, "#wl-progress", "0 of 5 reviewed")  # each image still needs its second reading
    read_all(page, "Bob", BOB)
    wait_text(page, "#wl-progress", "5 of 5 reviewed")
    shot(page, "wl_01_double_read")

    store = CaseStore(app["db"])
    readings = store.worklist_readings(1)
    assert [(r["position"], r["reviewer"], r["verdict"]) for r in readings] == [
        (p, who, VERDICT[keys[p - 1]]) for p in range(1, 6) for who, keys in (("Ann", ANN), ("Bob", BOB))]
    kappa = store.reader_agreement(1)["kappa"]
    wait_text(page, "#wl-progress", f"kappa {kappa:.2f} over 5 image(s)")

    page.get_by_text("Batch analysis, results and export").click()
    page.locator("#wl-export").click()
    link = page.locator("#wl-export-file a").first
    link.wait_for(state="visible", timeout=30_000)
    with page.expect_download() as dl:
        link.click()
    rows = list(csv.DictReader(open(dl.value.path(), encoding="utf-8")))
    assert len(rows) == 10
    for row, r in zip(rows, readings):
        assert (int(row["position"]), row["reviewer"], row["verdict"], int(row["case_id"])) == (
            r["position"], r["reviewer"], r["verdict"], r["case_id"])
        assert row["image"] == f"eye_{r['position'] - 1}.png" and row["model_id"] and len(row["prompt_set_sha256"]) == 64
    assert not errors, errors
