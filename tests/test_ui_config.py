"""Who may do what, and what the deployment installs: the Space owner's sign-in, the Hub panel,
importing the app without serving, and the Space's requirements."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from app_helpers import table_rows, train
from conftest import run_python


@pytest.mark.parametrize("sign_in", ["configured", "missing"])
def test_on_a_space_visitors_cannot_delete_rename_or_use_the_hub(trained, client, app_zoo, colours_zip, monkeypatch,
                                                                 sign_in):
    monkeypatch.setenv("SPACE_ID", "alice/transfer-zoo")
    monkeypatch.setenv("HF_TOKEN", "hf_the_space_owners_secret")
    if sign_in == "configured":
        monkeypatch.setenv("OAUTH_CLIENT_ID", "the-spaces-oauth-app")
    expected = r"Sign in with Hugging Face.* owner \(alice\)" if sign_in == "configured" else r"only its owner \(alice\)"
    for call, arguments in [("/delete_model", ("colours-fe",)), ("/rename_model", ("colours-fe", "mine")),
                            ("/push_model", ("colours-fe", "mallory/stolen", False)),
                            ("/pull_model", ("mallory/bad", "")), ("/list_hub_models", ("alice",)),
                            ("/import_model", (handle_file(str(colours_zip)), "mine"))]:
        with pytest.raises(AppError, match=expected) as error:
            client.predict(*arguments, api_name=call)
        assert "hf_the_space_owners_secret" not in str(error.value)
    for backbone in ("hf-hub:alice/private-model", "tf_efficientnet_lite0@/etc/passwd"):
        with pytest.raises(AppError, match=expected):
            train(client, colours_zip, name="visitor", backbone=backbone).result()
        with pytest.raises(AppError, match=expected):
            client.predict(handle_file(str(colours_zip)), backbone, 64, 0, 0, api_name="/advise")
        with pytest.raises(AppError, match=expected):
            client.predict(handle_file(str(colours_zip)), backbone, 10, 64, "visitor", api_name="/compare")
    assert (app_zoo / "colours-fe" / "model.safetensors").is_file() and not (app_zoo / "mine").exists()
    # browsing and predicting stay open to everyone
    table, *_ = client.predict("", None, api_name="/list_zoo")
    assert "colours-fe" in [row["name"] for row in table_rows(table)]


def test_only_the_signed_in_owner_passes_on_a_space():
    import gradio as gr

    from ui.config import AppConfig, require_owner

    space = AppConfig.from_env({"SPACE_ID": "Alice/zoo", "OAUTH_CLIENT_ID": "x", "APP_ADMINS": "bob"})
    assert space.owners == ("alice", "bob") and space.max_train_seconds == 600
    require_owner("delete models", profile("alice"), space)
    require_owner("delete models", profile("bob"), space)
    with pytest.raises(gr.Error, match="Sign in with Hugging Face"):
        require_owner("delete models", None, space)
    with pytest.raises(gr.Error, match="you are signed in as mallory"):
        require_owner("delete models", profile("mallory"), space)
    local = AppConfig.from_env({})
    assert not local.on_space and local.max_train_seconds is None
    require_owner("delete models", None, local)  # locally everything is allowed


def profile(username: str):
    import gradio as gr

    return gr.OAuthProfile({"name": username, "preferred_username": username, "profile": "", "picture": ""})


def test_hub_panel_shows_with_a_token_and_on_a_space_only_to_its_owner(monkeypatch):
    pytest.importorskip("zoo.hub")
    from ui.zoo_tab import hub_panel

    monkeypatch.setenv("HF_TOKEN", "hf_a_token")
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert hub_panel(None)["visible"] is True  # locally: whoever runs the app
    monkeypatch.setenv("SPACE_ID", "alice/transfer-zoo")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "the-spaces-oauth-app")
    assert hub_panel(None)["visible"] is False
    assert hub_panel(profile("mallory"))["visible"] is False
    assert hub_panel(profile("alice"))["visible"] is True


def test_importing_the_app_builds_the_page_without_serving_or_analytics(tmp_path):
    code = "import app, os; print(type(app.demo).__name__, app.demo.local_url, os.environ['GRADIO_ANALYTICS_ENABLED'])"
    done = run_python(code, env={"ZOO_DIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "True"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "Blocks None False"
    assert not (tmp_path / "cache").exists()  # nothing converted or loaded at import


def test_the_space_installs_what_the_project_declares():
    """A Space builds from requirements.txt and README.md's front matter alone: they must agree with
    pyproject.toml and start app.py with sign-in on."""
    import tomllib

    from huggingface_hub.repocard import metadata_load
    from packaging.requirements import Requirement

    def requirements(lines) -> dict[str, str]:
        parsed = [Requirement(line) for line in lines]
        return {requirement.name.lower().replace("_", "-"): str(requirement.specifier) for requirement in parsed}

    root = Path(__file__).resolve().parents[1]
    declared = requirements(tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"])
    lines = [line.strip() for line in (root / "requirements.txt").read_text().splitlines()]
    listed = requirements(line for line in lines if line and not line.startswith(("#", "-")))
    assert listed == declared
    assert "gradio[oauth]" in (root / "requirements.txt").read_text()  # the sign-in button needs it
    front = metadata_load(root / "README.md")
    assert (front["sdk"], front["app_file"], front["hf_oauth"]) == ("gradio", "app.py", True)
    assert front["sdk_version"].split(".")[0] == "6"
