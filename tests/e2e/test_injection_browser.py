"""End-to-end, in Debian's chromium: text a reviewer or a prompt supplies is shown as text, never run as HTML.

An ``<img src=x onerror=alert(1)>`` goes (a) into a prompt-table class name and prompt, analysed and explained,
and (b) into a reviewer name and note, saved and then found in the Cases tab and opened. Everywhere it is shown
the literal text must be visible, no ``<img src=x>`` element may appear in the page and no JS dialog may open
(SECURITY.md, issue 24). Skipped only when /usr/bin/chromium is absent.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.local_server import CHROMIUM

from .test_browser import EXAMPLE, app, choose, edit_cell, open_tab, shot, text_of, wait_text  # noqa: F401  (app: fixture)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
PAYLOAD = "<img src=x onerror=alert(1)>"
# every element an injected tag could become: the <img> itself, or anything carrying its handler
INJECTED = "img[src='x'], [onerror]"


def assert_not_injected(page, dialogs: list, where: str) -> None:
    page.wait_for_timeout(300)  # an onerror handler fires as soon as the broken image fails to load
    found = page.eval_on_selector_all(INJECTED, "els => els.map(e => e.outerHTML)")
    assert not found, f"{where}: injected element(s) in the page: {found}"
    assert not dialogs, f"{where}: a JS dialog opened: {dialogs}"


def test_prompt_and_review_text_are_shown_as_text(app, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs: list[str] = []

    def on_dialog(d):
        dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()

    page.on("dialog", on_dialog)
    page.goto(app["url"], wait_until="load")
    page.wait_for_selector("#analyse-btn", timeout=60_000)

    # (a) a prompt: the first row's class and prompt both carry the payload; analyse, then explain that class
    page.locator("#image-in input[type=file]").set_input_files(str(EXAMPLE))
    wait_text(page, "#analyse-status", "classes in")  # zero-shot: screening or prediction, then timing
    edit_cell(page, "#prompt-table", 0, 0, PAYLOAD)
    edit_cell(page, "#prompt-table", 0, 1, "")  # first a mistake: the error line and its pop-up quote the class
    page.wait_for_timeout(300)
    page.locator("#analyse-btn").click()
    wait_text(page, "#analyse-status", "the prompt is blank")
    page.locator(".toast-body").first.wait_for(state="visible", timeout=10_000)
    assert_not_injected(page, dialogs, "error line and pop-up")
    assert f"class '{PAYLOAD}'" in text_of(page, "#analyse-status")
    assert PAYLOAD in page.locator(".toast-body").first.inner_text()
    edit_cell(page, "#prompt-table", 0, 1, f"a normal fundus {PAYLOAD}")
    page.wait_for_timeout(300)
    page.locator("#analyse-btn").click()
    wait_text(page, "#probs-out", PAYLOAD)  # the class's probability, labelled with the literal text
    choose(page, "sal-class", PAYLOAD)
    wait_text(page, "#analyse-status", "Saliency (multiscale, softmax) for")  # a Markdown status line
    assert_not_injected(page, dialogs, "Analyse tab")
    assert f"for '{PAYLOAD}'" in text_of(page, "#analyse-status")
    assert PAYLOAD in text_of(page, "#prompt-table")
    open_tab(page, "Review and log")
    wait_text(page, "#review-summary", "saliency multiscale (softmax) /")  # names the explained class
    assert_not_injected(page, dialogs, "review summary")
    assert f"/ {PAYLOAD}" in text_of(page, "#review-summary")
    shot(page, "inject_01_prompt")

    # (b) a reviewer name and note, saved, then searched for and opened in the Cases tab
    page.locator("#reviewer input, #reviewer textarea").first.fill(f"Dr {PAYLOAD}")
    page.get_by_label("Notes", exact=True).first.fill(f"note {PAYLOAD} end")
    page.locator("#save-review").click()
    wait_text(page, "#review-status", "Saved case #1")
    open_tab(page, "Cases")
    page.get_by_label("Search notes", exact=True).fill("onerror")
    page.locator("#search-btn").click()
    wait_text(page, "#cases-status", "1 case(s) found")
    wait_text(page, "#cases-df", f"note {PAYLOAD} end")
    assert f"Dr {PAYLOAD}" in text_of(page, "#cases-df")
    page.locator("#case-id input").fill("1")
    page.get_by_role("button", name="Open case", exact=True).click()
    wait_text(page, "#case-md", "Current verdict")
    assert_not_injected(page, dialogs, "case view")
    assert f"by Dr {PAYLOAD}" in text_of(page, "#case-md")
    assert "predicted **" not in text_of(page, "#case-md")  # Markdown still renders around the text
    page.get_by_text(f"note {PAYLOAD} end").last.wait_for(state="visible", timeout=10_000)  # in the history
    assert_not_injected(page, dialogs, "Cases tab")
    shot(page, "inject_02_cases")
    page.close()
