"""The model zoo: what a model IS and where it LIVES.

Importing this package is cheap (no torch); the modules load what they need.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ZooError", "zoo_dir"]


class ZooError(Exception):
    """A problem a user can act on: the message says what to fix."""


def zoo_dir(explicit: str | Path | None = None) -> Path:
    """Where the local zoo lives: `explicit`, else `$ZOO_DIR`, else a per-user data folder.

    The default is `$XDG_DATA_HOME/transfer-zoo` (usually `~/.local/share/transfer-zoo`), never the
    source tree, so a `git clean` cannot delete anybody's models.
    """
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get("ZOO_DIR"):
        return Path(os.environ["ZOO_DIR"]).expanduser().resolve()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return (Path(data_home) / "transfer-zoo").resolve()
