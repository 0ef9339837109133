"""The app in a real browser: headless Chromium (Debian's `chromium`) driven by playwright.

One user's whole visit: open the page, upload a zip of class folders, train with one click, open a
cell of the confusion matrix, find the new model in the zoo table, predict a new picture with it and
see its Grad-CAM heatmap. Screenshots of every step go to
tests/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from app_helpers import COLOURS, colour_image, colour_zip, serving

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
TRAINING_TIMEOUT_MS = 240_000  # generous: a busy 2-core machine; the fit itself takes seconds

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)"),
]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tmp_path_factory.mktemp("browser-zoo")


@pytest.fixture(scope="module")
def url(zoo):
    with serving(zoo) as address:
        yield address


@pytest.fixture(scope="module")
def browser(url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(url)
    yield page
    if not page.is_closed():
        page.close()


def upload_and_set(page, upload: Path, *, image_size: int, strategy: str | None = None, epochs: int | None = None):
    """On the Fine-tune tab: upload the zip, wait for its summary, pick strategy and settings."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#dataset-zip input[type=file]").set_input_files(str(upload))
    expect(page.locator("#dataset-summary")).to_contain_text("3 classes, 30 training / 6 validation images")
    if strategy:
        page.locator("#strategy").get_by_label(strategy).check()
    page.get_by_text("More settings").click()
    page.locator("#image-size input").fill(str(image_size))
    if epochs:
        page.locator("#epochs input").fill(str(epochs))
    page.locator("#image-size input").press("Tab")


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_upload_train_find_in_zoo_and_predict(page, tmp_path):
    from playwright.sync_api import expect

    upload = colour_zip(tmp_path / "colours.zip")
    picture = tmp_path / "a-new-red-thing.png"
    colour_image("red", seed=4242, size=64).save(picture)

    # the page opens on the zoo: the built-in ImageNet classifiers, the newest selected, its card shown
    expect(page.get_by_role("tab", name="Zoo")).to_be_visible()
    expect(page.locator("#zoo-table")).to_contain_text("tf_efficientnet_lite0", timeout=60_000)  # first listing
    # of a new zoo describes the built-ins once (seconds)
    expect(page.locator("#model-card")).to_contain_text("ImageNet")
    shoot(page, "1-zoo")

    # Fine-tune: upload the zip; the summary, class counts and thumbnails appear before any training
    upload_and_set(page, upload, image_size=64)
    expect(page.locator("#thumbnails img")).to_have_count(12)
    # the strategy is auto: its advice (choice, reasons, numbers) and its estimate show before training
    expect(page.locator("#advice")).to_contain_text("Auto's advice", timeout=120_000)
    expect(page.locator("#advice")).to_contain_text("30 training images in 3 classes")
    expect(page.locator("#estimate")).to_contain_text("Estimated time (auto's choice")
    page.locator("#model-name").get_by_role("textbox").fill("browser-colours")
    shoot(page, "2-dataset")

    # one click trains; Cancel is live while it runs; the metrics and confusion matrix follow
    started = time.monotonic()
    page.locator("#train-button").click()
    expect(page.locator("#cancel-button")).to_be_enabled()
    expect(page.locator("#train-status")).to_contain_text("Saved as browser-colours", timeout=TRAINING_TIMEOUT_MS)
    seconds = time.monotonic() - started
    expect(page.locator("#results")).to_contain_text("accuracy")
    expect(page.locator("#results")).to_contain_text("Strategy auto chose")
    expect(page.locator("#confusion")).to_contain_text("red")
    expect(page.locator("#train-button")).to_be_enabled()
    expect(page.locator("#cancel-button")).to_be_disabled()
    shoot(page, "3-trained")
    print(f"one-click fine-tune in the browser: {seconds:.1f} s")

    # the drill-down: clicking a cell of the confusion matrix shows its validation images
    expect(page.locator("#drill-down")).to_be_visible()
    expect(page.locator("#cell-title")).to_contain_text("Click a cell")
    cell = page.locator("#confusion [data-testid='cell-2-3']")  # row 2: true red; column 3: predicted red
    count = int(cell.inner_text().strip())
    cell.click()
    expect(page.locator("#cell-title")).to_contain_text(f"{count} validation image(s) of red recognised")
    expect(page.locator("#cell-images img")).to_have_count(count)
    shoot(page, "3b-drill-down")

    # the zoo table has the new model
    page.get_by_role("tab", name="Zoo").click()
    expect(page.locator("#zoo-table")).to_contain_text("browser-colours")
    expect(page.locator("#model-card")).to_contain_text("browser-colours")
    shoot(page, "4-zoo-with-model")

    # Predict: the new model is already selected; a new picture gets one of the uploaded class names
    page.get_by_role("tab", name="Predict").click()
    expect(page.locator("#predict-model input")).to_have_value("browser-colours")
    page.locator("#predict-image input[type=file]").set_input_files(str(picture))  # predicts on upload
    top = page.locator("#prediction [data-testid='label-output-value']")
    expect(top).to_have_text(re.compile("|".join(COLOURS)))
    assert top.inner_text().strip() == "red"  # and it is the right one
    expect(page.locator("#prediction")).to_contain_text("blue")  # the runners-up are listed too
    shoot(page, "5-predict")

    # what the model looked at: a Grad-CAM heatmap beside the scores
    page.locator("#explain-button").click()
    expect(page.locator("#heatmap img")).to_be_visible()
    expect(page.locator("#heatmap-note")).to_contain_text("Where the evidence for red")
    shoot(page, "5b-heatmap")


def test_cancel_and_closing_the_page_stop_a_fit_and_save_nothing(page, browser, url, zoo, tmp_path):
    from playwright.sync_api import expect

    upload = colour_zip(tmp_path / "colours.zip")
    before = sorted(path.name for path in zoo.iterdir())
    # from-scratch never stops early by itself: 300 epochs would take minutes
    upload_and_set(page, upload, image_size=64, strategy="from-scratch", epochs=300)
    page.locator("#train-button").click()
    expect(page.locator("#train-status")).to_contain_text(" · epoch ", timeout=TRAINING_TIMEOUT_MS)
    shoot(page, "6-training")

    # a second user's fit waits in the queue (one fit at a time); Cancel works there too
    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.goto(url)
    upload_and_set(other, upload, image_size=64)
    other.locator("#train-button").click()
    expect(other.locator("#cancel-button")).to_be_enabled()
    other.locator("#cancel-button").click()
    expect(other.locator("#train-status")).to_contain_text("Cancelled before it started")

    page.locator("#cancel-button").click()
    expect(page.locator("#train-status")).to_have_text("Cancelled. Nothing was saved.")
    expect(page.locator("#train-button")).to_be_enabled()
    shoot(page, "7-cancelled")
    expect(other.locator("#train-status")).to_have_text("Cancelled. Nothing was saved.")  # its turn came
    expect(other.locator("#train-button")).to_be_enabled()
    other.close()

    # a user who closes the page mid-fit: the fit stops too
    page.locator("#train-button").click()
    expect(page.locator("#train-status")).to_contain_text(" · epoch ", timeout=TRAINING_TIMEOUT_MS)
    fits = [thread for thread in threading.enumerate() if thread.name == "fit"]
    page.close()
    for thread in fits:  # wait for the fit's thread to end (the bound only guards against a hang)
        thread.join(timeout=600)
        assert not thread.is_alive(), "the fit of a closed page is still running"
    assert sorted(path.name for path in zoo.iterdir()) == before


def test_example_dataset_gets_advice_and_the_compare_tab_is_there(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text("More settings").click()
    page.locator("#image-size input").fill("64")  # a quicker frozen pass than the backbone's own 224 px
    page.locator("#example-dataset").click()
    expect(page.locator("#dataset-summary")).to_contain_text("10 classes, 160 training / 40 validation images")
    expect(page.locator("#advice")).to_contain_text("Auto's advice", timeout=120_000)
    expect(page.locator("#advice")).to_contain_text("feature shift")
    shoot(page, "8-advice")
    page.get_by_role("tab", name="Compare strategies").click()
    expect(page.locator("#compare-dataset")).to_contain_text("Dataset: digits, 10 classes")
    expect(page.locator("#compare-button")).to_be_visible()
    expect(page.locator("#compare-table")).to_contain_text("trainable parameters")
    shoot(page, "9-compare-tab")
