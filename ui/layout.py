"""The page: a header (with Hugging Face sign-in on a Space), the four tabs, the queue, launch options."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ui import compare_tab, predict_tab, train_tab, zoo_tab
from ui.config import app_config
from ui.uploads import ASSETS

CSS = """
.gradio-container { max-width: 1280px !important; width: 100%; margin: auto; }
#app-title h1 { margin-bottom: 0; }
#train-progress, #compare-progress { min-height: 64px; }
"""


def build_demo() -> gr.Blocks:
    """The whole app; nothing runs until it is launched."""
    config = app_config()
    with gr.Blocks(title="Transfer Zoo", delete_cache=(3600, 6 * 3600)) as demo:  # uploads go after 6 h
        with gr.Row(equal_height=True):
            gr.Markdown("# Transfer Zoo\nFine-tune a pretrained image model on your own labelled pictures "
                        "in one click, keep it in the zoo, and try it here.", elem_id="app-title")
            if config.oauth_ready:
                gr.LoginButton(scale=0, min_width=220)
        with gr.Tabs():
            zoo = zoo_tab.build(demo, config.on_space)
            predict = predict_tab.build(demo)
            train = train_tab.build(demo, config, zoo, predict)
            compare_tab.build(demo, config, train, zoo, predict)
    demo.queue(default_concurrency_limit=2)  # events without their own limit; see ui.handlers
    return demo


def launch_options() -> dict[str, Any]:
    """What `demo.launch` needs besides host and port (the tests launch with the same options)."""
    config = app_config()
    return {
        "theme": gr.themes.Soft(primary_hue="indigo"),
        "css": CSS,
        "max_file_size": f"{config.max_upload_mb}mb",
        "allowed_paths": [str(ASSETS)],
        "show_error": True,
    }
