"""What this deployment allows: settings from the environment, and who may do what.

Locally, everything. On a Hugging Face Space (`SPACE_ID` set) anyone may browse, predict, export and
run a short fine-tune from a bundled or zoo backbone, but deleting, renaming, importing, anything on
the Hub, and fine-tuning from a Hub name or a file need the Space owner's Hugging Face sign-in
(`gr.LoginButton`; README front matter `hf_oauth: true`), so the Space's `HF_TOKEN` is never used on
a visitor's behalf and visitors cannot name files on the server.

Environment:
    ZOO_DIR                where models live (a Space with persistent storage: /data/zoo)
    APP_MAX_UPLOAD_MB      largest dataset zip accepted (default 200)
    APP_MAX_IMAGES         most images in one dataset (default 5000)
    APP_MAX_TRAIN_SECONDS  time budget cap for every fit (default: none locally, 600 on a Space)
    SPACE_ID, SPACE_AUTHOR_NAME   set by Spaces; the owner is SPACE_AUTHOR_NAME or SPACE_ID's namespace
    APP_ADMINS             further Hugging Face usernames allowed the owner's actions (comma-separated)
    HF_TOKEN               the Hub token for push / pull (shown only when one is set)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import gradio as gr

from zoo.weights import BUNDLED

log = logging.getLogger("transfer_zoo.app")

SPACE_TRAIN_SECONDS = 600.0  # on a public Space every fit stops after this (APP_MAX_TRAIN_SECONDS overrides)


@dataclass(frozen=True)
class AppConfig:
    """What the environment says about this deployment; read per request (cheap), never mutated."""

    max_upload_mb: int = 200  # largest dataset zip accepted
    max_images: int = 5000  # most images in one dataset
    max_train_seconds: float | None = None  # every fit's time budget is capped at this
    space_id: str | None = None  # "owner/space" on a Hugging Face Space
    owners: tuple[str, ...] = ()  # usernames allowed to delete, rename and use the Hub token
    oauth_ready: bool = False  # the Space has Hugging Face sign-in (hf_oauth: true)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "AppConfig":
        env = os.environ if environ is None else environ
        space_id = env.get("SPACE_ID") or None
        owner = env.get("SPACE_AUTHOR_NAME") or (space_id.split("/")[0] if space_id else "")
        admins = [name.strip() for name in env.get("APP_ADMINS", "").split(",") if name.strip()]
        return cls(
            max_upload_mb=int(positive_number(env, "APP_MAX_UPLOAD_MB", cls.max_upload_mb)),
            max_images=int(positive_number(env, "APP_MAX_IMAGES", cls.max_images)),
            max_train_seconds=positive_number(env, "APP_MAX_TRAIN_SECONDS", SPACE_TRAIN_SECONDS if space_id else None),
            space_id=space_id,
            owners=tuple(name.lower() for name in [owner, *admins] if name),
            oauth_ready=bool(space_id and env.get("OAUTH_CLIENT_ID")),
        )

    @property
    def on_space(self) -> bool:
        return self.space_id is not None

    def time_budget(self, requested: float | None) -> float | None:
        """The fit's `max_seconds`: what the user asked for, capped by the deployment's limit."""
        limits = [value for value in (requested, self.max_train_seconds) if value]
        return min(limits) if limits else None


def positive_number(env, key: str, default: float | None) -> float | None:
    """`env[key]` as a positive number; `default` when it is unset or not one (with a warning)."""
    text = env.get(key)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0
    if value > 0:
        return value
    log.warning("%s=%r is not a positive number; using %s", key, text, default)
    return default


def app_config() -> AppConfig:
    return AppConfig.from_env()


def require_owner(action: str, profile: gr.OAuthProfile | None, config: AppConfig) -> None:
    """Locally anyone may `action`; on a Space only its owner, signed in with Hugging Face."""
    if not config.on_space:
        return
    owner = config.owners[0] if config.owners else "the Space's owner"
    if not config.oauth_ready:
        raise gr.Error(f"On this Space only its owner ({owner}) may {action}, and it has no sign-in "
                       "(add `hf_oauth: true` to the Space's README). Run the app locally to do this.")
    if profile is None:
        raise gr.Error(f"Sign in with Hugging Face (button at the top) as the Space's owner ({owner}) to {action}.")
    if profile.username.lower() not in config.owners:
        raise gr.Error(f"Only the Space's owner ({owner}) may {action}; you are signed in as {profile.username}.")


def require_backbone_allowed(backbone: str, action: str, profile: gr.OAuthProfile | None, config: AppConfig) -> None:
    """Anyone may `action` from a bundled or zoo backbone; a Hub name would download with the Space's
    token and a file path would read the server's disk, so on a Space those need the owner."""
    if backbone in BUNDLED or backbone.startswith("zoo:"):
        return
    require_owner(f"{action} from '{backbone}' (visitors: {', '.join(BUNDLED)} or zoo:NAME)", profile, config)
