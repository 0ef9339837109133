"""Transfer Zoo in the browser: browse the zoo, fine-tune on an uploaded zip in one click, predict.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)

The entry point a Hugging Face Space runs. The page is built by the `ui` package (one module per
tab; see its docstring for the layout, and `ui.config` for the environment variables it reads).
Importing this module builds `demo` without serving it, so tests can launch it themselves.
"""

from zoo.malloc import tune_malloc

tune_malloc()  # before torch is imported: 2-3x on small CPUs

import logging  # noqa: E402
import os  # noqa: E402

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # the app never needs the internet

from ui import build_demo, launch_options  # noqa: E402
from ui.config import app_config  # noqa: E402

demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests
    demo.launch(
        # a Space must listen on every interface; locally only this machine (GRADIO_SERVER_NAME overrides)
        server_name=os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if app_config().on_space else "127.0.0.1"),
        **launch_options(),
    )
