"""The zoo on the Hugging Face Hub: push a model, pull one, list a namespace's models.

    from zoo.hub import push_model, pull_model, list_hub_models
    url = push_model("cats-vs-dogs", private=True)           # -> https://huggingface.co/me/cats-vs-dogs
    name = pull_model("someone/cats-vs-dogs")                 # -> "cats-vs-dogs", now in the local zoo
    rows = list_hub_models("someone")                         # models tagged "transfer-zoo"

A model on the Hub is exactly its zoo folder: config.json, model.safetensors, README.md (the card,
tagged `transfer-zoo`) and transfer.json. As in huggingface_hub's own `push_to_hub`, a push
first writes the model to a temporary folder (hard links to one consistent version of the zoo
folder) and uploads that folder, so disk and Hub never differ; only those four files are sent
(never a `.bin`) and other files in the repo are deleted in the same commit. A pull checks the
repository's file list first (anything else, a pickle above all, is refused with the reason),
downloads the files of one commit, checks them like an import (JSON, safetensors, names and
shapes against the spec) and lands them in the zoo atomically. An image-only model of the
feature-extractor, fine-tune or from-scratch strategy also loads with plain
`timm.create_model("hf-hub:owner/name", pretrained=True)`.

The token comes from the `token` argument, else HF_TOKEN, else huggingface_hub's stored login
(`hf auth login`); it is never printed, logged, or written into a file. The default namespace
is $ZOO_HUB_NAMESPACE, else the token's user. Offline (HF_HUB_OFFLINE=1, or no network) every
function raises `ZooError` at once, and the local zoo keeps working. `endpoint` points the calls
at another Hub (a mirror, or a test server).

Any timm model on the Hub also serves as a backbone for a fine-tune: `--backbone hf-hub:owner/name`
(see `zoo.weights`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo import ZooError
from zoo.archives import install_folder, snapshot_model
from zoo.card import PROJECT_TAG
from zoo.catalog import read_entry
from zoo.files import staging_folder
from zoo.store import (
    MAX_JSON_BYTES,
    MAX_WEIGHTS_BYTES,
    MODEL_FILES,
    REQUIRED_FILES,
    check_free,
    ensure_zoo,
    validate_name,
)

log = logging.getLogger(__name__)

NAMESPACE_ENV = "ZOO_HUB_NAMESPACE"
IGNORED_REPO_FILES = (".gitattributes",)  # every Hub repo has one; never downloaded


def hub_token() -> str | None:
    """HF_TOKEN, else the token stored by `hf auth login`, else None."""
    from huggingface_hub import get_token

    return get_token()  # reads HF_TOKEN first, then the stored login


def push_model(
    name: str,
    *,
    repo_id: str | None = None,
    private: bool = False,
    zoo: str | Path | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload zoo model `name` to `repo_id` (default: NAMESPACE/NAME). Returns the repo's URL.

    The repo is created when missing (private if asked; an existing repo is made private when
    `private` is set, never made public). Its files become exactly the model's four."""
    _require_online("push to the Hub")
    token = token or hub_token()
    if not token:
        raise ZooError("Pushing needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`.")
    read_entry(name, zoo=zoo)  # a missing or damaged model fails before any network call
    api = _api(endpoint, token)
    with _hub_errors(f"push '{name}' to the Hub", token):
        repo_id = _valid_repo_id(repo_id or f"{_default_namespace(api, token)}/{name}")
        with staging_folder(ensure_zoo(zoo), f"push-{name}") as folder:
            snapshot_model(name, folder, zoo=zoo)
            _check_upload(folder, token)
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if private:
                api.update_repo_settings(repo_id, private=True)  # when the repo existed, public
            api.upload_folder(
                repo_id=repo_id, folder_path=folder, allow_patterns=list(MODEL_FILES), delete_patterns="*",
                commit_message=f"Upload {name} from Transfer Zoo",
            )
    log.info("pushed %s to %s", name, url)
    return str(url)


def pull_model(
    repo_id: str,
    *,
    name: str | None = None,
    zoo: str | Path | None = None,
    token: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    overwrite: bool = False,
) -> str:
    """Download the Transfer Zoo model `repo_id` into the zoo as `name` (default: the repo's
    name). Returns the local name. Nothing is written unless every check passes."""
    _require_online(f"pull {repo_id}")
    token = token or hub_token()
    repo_id = _valid_repo_id(repo_id)
    name = name or repo_id.split("/")[-1]
    try:
        validate_name(name)
    except ZooError as error:
        raise ZooError(f"{error} Give the model another name (--name).") from None
    root = ensure_zoo(zoo)
    target = check_free(root, name, overwrite=overwrite)
    api = _api(endpoint, token)
    with _hub_errors(f"pull {repo_id}", token):
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        files = _checked_repo_files(repo_id, {sibling.rfilename: sibling.size for sibling in info.siblings or []})
        with staging_folder(root, f"download-{name}") as downloads, staging_folder(root, name) as folder:
            for file in files:
                api.hf_hub_download(repo_id, file, revision=info.sha, local_dir=downloads)
                os.replace(downloads / file, folder / file)
            install_folder(folder, target, overwrite=overwrite, source=f"{repo_id}@{(info.sha or '')[:8]}")
    log.info("pulled %s (%s) as %s", repo_id, info.sha, name)
    return name


def list_hub_models(
    namespace: str | None = None,
    *,
    token: str | None = None,
    endpoint: str | None = None,
) -> list[dict[str, Any]]:
    """The Hub models tagged `transfer-zoo` of `namespace` (default: $ZOO_HUB_NAMESPACE, else the
    token's user; with neither, everyone's), newest first. One dict per model: repo_id, name,
    strategy, private, downloads, likes, last_modified (ISO 8601), tags, url."""
    _require_online("list Hub models")
    token = token or hub_token()
    api = _api(endpoint, token)
    with _hub_errors("list Hub models", token):
        namespace = namespace or os.environ.get(NAMESPACE_ENV) or (_default_namespace(api, token) if token else None)
        models = list(api.list_models(
            author=namespace, filter=[PROJECT_TAG], limit=None if namespace else 200,  # everyone's: the newest
            sort=None if namespace else "last_modified",
            expand=["author", "private", "downloads", "likes", "lastModified", "tags"],
        ))
    rows = [_model_row(model, api.endpoint) for model in models]
    return sorted(rows, key=lambda row: row["last_modified"] or "", reverse=True)


# --- internals ---------------------------------------------------------------------------------------


def _api(endpoint: str | None, token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="transfer-zoo")


def _require_online(action: str) -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise ZooError(f"Cannot {action}: the Hub is switched off here (HF_HUB_OFFLINE is set). "
                       "The local zoo works as usual.")


def _default_namespace(api, token: str | None) -> str:
    namespace = os.environ.get(NAMESPACE_ENV)
    if namespace:
        return namespace
    if not token:
        raise ZooError(f"Which namespace? Give a repo id 'owner/name', set {NAMESPACE_ENV}, or log in.")
    return api.whoami(cache=True)["name"]


def _valid_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = (repo_id or "").strip().removeprefix("hf-hub:")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ZooError(f"Invalid Hub repository id {repo_id!r} ({str(error).splitlines()[0]}); "
                       "write it as owner/name.") from None
    if repo_id.count("/") != 1:
        raise ZooError(f"Invalid Hub repository id {repo_id!r}: write it as owner/name.")
    return repo_id


def _check_upload(folder: Path, token: str) -> None:
    """Last look before anything leaves the machine: the four files, and no token inside them."""
    files = sorted(item.name for item in folder.iterdir())
    if files != sorted(MODEL_FILES):
        raise ZooError(f"refusing to push: expected exactly {', '.join(MODEL_FILES)}, found {', '.join(files)}")
    for item in folder.iterdir():
        if token.encode() in item.read_bytes():
            raise ZooError(f"refusing to push: {item.name} contains your Hugging Face token")


def _checked_repo_files(repo_id: str, files: dict[str, int | None]) -> list[str]:
    """The model files to download from a repo whose files are `files` ({name: size}), or why not."""
    unexpected = sorted(set(files) - set(MODEL_FILES) - set(IGNORED_REPO_FILES))
    if unexpected:
        pickles = [file for file in unexpected if file.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle"))]
        why = f" ({', '.join(pickles)}: pickled weights can run code)" if pickles else ""
        raise ZooError(f"Refusing to pull {repo_id}: unexpected file(s) {', '.join(unexpected[:10])}{why}. "
                       f"A Transfer Zoo model holds only {', '.join(MODEL_FILES)}.")
    missing = [file for file in REQUIRED_FILES if file not in files]
    if missing:
        hint = (f" To fine-tune from a timm model on the Hub, use it as a backbone: --backbone hf-hub:{repo_id}"
                if "transfer.json" in missing else "")
        raise ZooError(f"Refusing to pull {repo_id}: it has no {', '.join(missing)}; "
                       f"it is not a Transfer Zoo model.{hint}")
    for file, size in files.items():
        limit = MAX_WEIGHTS_BYTES if file == "model.safetensors" else MAX_JSON_BYTES
        if size is not None and size > limit and file in MODEL_FILES:
            raise ZooError(f"Refusing to pull {repo_id}: {file} is {size:,} bytes, more than a model needs.")
    return [file for file in MODEL_FILES if file in files]


def _model_row(model, endpoint: str) -> dict[str, Any]:
    tags = list(model.tags or [])
    strategy = next((tag.removeprefix("strategy-") for tag in tags if tag.startswith("strategy-")), None)
    modified = getattr(model, "last_modified", None)
    return {
        "repo_id": model.id,
        "name": model.id.split("/")[-1],
        "strategy": strategy,
        "private": getattr(model, "private", None),
        "downloads": getattr(model, "downloads", None),
        "likes": getattr(model, "likes", None),
        "last_modified": modified.isoformat() if modified else None,
        "tags": tags,
        "url": f"{endpoint.rstrip('/')}/{model.id}",
    }


@contextlib.contextmanager
def _hub_errors(action: str, token: str | None) -> Iterator[None]:
    """huggingface_hub's exceptions -> `ZooError` saying what to do; the token never appears."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    transport_error = HfHubHTTPError.__mro__[1]  # httpx's HTTPError: connection and protocol failures
    try:
        yield
    except ZooError:
        raise
    except OfflineModeIsEnabled:
        raise ZooError(f"Cannot {action}: the Hub is switched off here (HF_HUB_OFFLINE is set). "
                       "The local zoo works as usual.") from None
    except RepositoryNotFoundError:
        raise ZooError(f"Cannot {action}: no such repository, or it is private and your token cannot see it.") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            reason = "the Hub rejected the token; set a valid HF_TOKEN or run `hf auth login`"
        elif status == 403:
            reason = "the token may not do this (it needs write access to that namespace)"
        else:
            reason = f"the Hub answered {status}: {_first_line(error, token)}"
        raise ZooError(f"Cannot {action}: {reason}.") from None
    except HFValidationError as error:
        raise ZooError(f"Cannot {action}: {_first_line(error, token)}") from None
    except (transport_error, OSError) as error:
        raise ZooError(f"Cannot {action}: the Hub cannot be reached ({type(error).__name__}: "
                       f"{_first_line(error, token)}). The local zoo works as usual.") from None


def _first_line(error: BaseException, token: str | None) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return text.replace(token, "***") if token else text
