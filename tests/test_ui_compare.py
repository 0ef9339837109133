"""The app's Compare strategies tab through its API: all four strategies into the zoo, the table
filling in run by run, and cancel keeping the runs that finished."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from app_helpers import table_rows, wait_for_update
from zoo.catalog import remove_model


def test_compare_runs_all_four_strategies_into_the_zoo(trained, client, colours_zip, app_zoo):
    started = time.monotonic()
    status, summary, table, chart = client.predict(handle_file(str(colours_zip)), "tf_efficientnet_lite0", 20, 64,
                                                   "cmp", api_name="/compare")
    seconds = time.monotonic() - started
    assert status == "**Done.**"
    rows = table_rows(table)
    assert table["headers"] == ["strategy", "accuracy", "macro-F1", "seconds", "trainable parameters", "model",
                                "note"]
    assert [row["strategy"] for row in rows] == ["feature-extractor", "shallow", "fine-tune", "from-scratch"]
    assert all(0 <= row["accuracy"] <= 1 and 0 <= row["macro-F1"] <= 1 and row["trainable parameters"] > 0
               for row in rows), rows
    assert sum("auto's choice" in row["note"] for row in rows) == 1
    assert sum("best" in row["note"].split(", ") for row in rows) == 1
    assert "**cmp**" in summary and "30 train / 6 val / 0 test" in summary and "20 s budget" in summary
    assert Path(chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed, *_ = client.predict("cmp", None, api_name="/search_zoo")
    assert sorted(row["name"] for row in table_rows(listed)) == sorted(row["model"] for row in rows)
    with pytest.raises(AppError, match="already exists"):
        client.predict(handle_file(str(colours_zip)), "tf_efficientnet_lite0", 20, 64, "cmp", api_name="/compare")
    with pytest.raises(AppError, match="Upload a .zip"):
        client.predict(None, "tf_efficientnet_lite0", 20, 64, "", api_name="/compare")
    with pytest.raises(AppError, match="less than minimum value 0"):  # gradio checks the number itself
        client.predict(handle_file(str(colours_zip)), "tf_efficientnet_lite0", -5, 64, "", api_name="/compare")
    for row in rows:
        remove_model(row["model"], zoo=app_zoo)
    print(f"comparison through the API: {seconds:.1f} s")


def test_cancel_stops_a_comparison_and_keeps_the_finished_runs(trained, client, colours_zip, app_zoo):
    job = client.submit(handle_file(str(colours_zip)), "tf_efficientnet_lite0", 0, 64, "cmp-stop",
                        api_name="/compare")  # no budget: from-scratch would run its full schedule
    wait_for_update(job, lambda update: update[0].startswith("**Running fine-tune"))
    # each finished run's row shows as soon as it ends, before the whole comparison does
    partial = [update[2] for update in job.outputs()
               if update[0].startswith("**Running") and isinstance(update[2], dict) and update[2].get("data")]
    shown = [row["strategy"] for row in table_rows(partial[-1])] if partial else []
    assert shown[:2] == ["feature-extractor", "shallow"], shown  # fine-tune may have finished too by now
    assert all(0 <= row["accuracy"] <= 1 and row["model"] for row in table_rows(partial[-1]))
    assert "Stopping" in client.predict(api_name="/cancel_compare")
    status, summary, *_ = job.result()
    assert status.startswith("**Cancelled.**") and summary == ""
    left = sorted(path.name for path in app_zoo.iterdir() if path.name.startswith("cmp-stop"))
    finished = ["cmp-stop-feature-extractor", "cmp-stop-shallow"]  # before fine-tune began
    assert left in (finished, sorted([*finished, "cmp-stop-fine-tune"])), left  # (a quick fine-tune may finish)
    assert all((app_zoo / name / "model.safetensors").is_file() for name in left)
    assert not any(path.name.startswith(".staging") for path in app_zoo.iterdir())
    assert client.predict(api_name="/cancel_compare") == "No comparison is running right now."
    for name in left:
        remove_model(name, zoo=app_zoo)
