"""The Hub side of the zoo, with no network: a recording fake Hub (tests/fixtures/fake_hub.py) on
127.0.0.1 stands in for huggingface.co, reached through `HfApi(endpoint=...)` or HF_ENDPOINT.

What is checked is what a user (or the Hub) would see: the exact files a push sends and where,
that the token travels only in the Authorization header, that a pull lands a model that predicts
like the original, that bad repositories are refused with the reason and leave nothing behind,
that `hf-hub:owner/name` backbones work through timm's layout and fail clearly offline. A live
round trip against the real Hub runs only with HF_TOKEN set (`-m live_hub`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import huggingface_hub.constants
import pytest
import safetensors.torch
import torch

from conftest import ASSETS, run_cli, run_python
from fixtures.fake_hub import FakeHub
from transfer.fit import fit
from zoo import ZooError
from zoo.hub import list_hub_models, pull_model, push_model
from zoo.predict import predict
from zoo.catalog import list_entries, read_entry

MODEL_FILES = ["README.md", "config.json", "model.safetensors", "transfer.json"]
TOKEN = "hf_FakeTokenForTests0123456789abcdef"
IMAGES = sorted(str(p) for p in (ASSETS / "digits").glob("*/*.png"))[::25]


@pytest.fixture(scope="module")
def hub_zoo(digits_small, zoo_path) -> Path:
    """The session zoo (its feature cache makes this fit quick) with a real digits model."""
    fit(digits_small, strategy="feature-extractor", image_size=32, zoo=zoo_path, name="hub-digits")
    return zoo_path


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Lift the suite's HF_HUB_OFFLINE for this test; no stored login can leak in."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("ZOO_HUB_NAMESPACE", raising=False)


@pytest.fixture
def hub(online, monkeypatch):
    """The fake Hub, also as the default endpoint: huggingface_hub itself calls home on its first
    request (a registry for its user agent), and that call must not leave the machine either."""
    with FakeHub() as fake:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.url)  # as HF_ENDPOINT would set them
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            fake.url + "/{repo_id}/resolve/{revision}/{filename}")
        yield fake


def test_push_sends_exactly_the_four_files_to_the_right_repo_and_never_the_token(hub, hub_zoo, caplog):
    caplog.set_level(logging.DEBUG)
    url = push_model("hub-digits", zoo=hub_zoo, token=TOKEN, endpoint=hub.url)
    assert url == f"{hub.url}/tester/hub-digits"  # the token's user is the default namespace
    repo = hub.repos["tester/hub-digits"]
    assert sorted(set(repo.files) - {".gitattributes"}) == MODEL_FILES
    for name in MODEL_FILES:  # byte for byte what is on disk: disk and Hub never differ
        assert repo.files[name] == (hub_zoo / "hub-digits" / name).read_bytes(), name
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in repo.files)
    [upload] = hub.uploads()
    assert TOKEN.encode() not in upload.body and all(TOKEN.encode() not in data for data in repo.files.values())
    # the token goes only where it belongs: the Authorization header
    for request in hub.requests:
        assert TOKEN not in request.path and TOKEN.encode() not in request.body
        assert request.headers.get("authorization") in (f"Bearer {TOKEN}", None)
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)
    assert TOKEN not in caplog.text
    assert "transfer-zoo" in repo.tags() and "strategy-feature-extractor" in repo.tags()


def test_push_repo_id_namespace_private_and_a_second_push_replaces_the_files(hub, hub_zoo, monkeypatch):
    push_model("hub-digits", repo_id="someone/explicit", private=True, zoo=hub_zoo, token=TOKEN, endpoint=hub.url)
    assert hub.repos["someone/explicit"].private
    monkeypatch.setenv("ZOO_HUB_NAMESPACE", "team")
    push_model("hub-digits", zoo=hub_zoo, token=TOKEN, endpoint=hub.url)
    repo = hub.repos["team/hub-digits"]
    repo.files["pytorch_model.bin"] = b"left over from an older push"
    push_model("hub-digits", zoo=hub_zoo, token=TOKEN, endpoint=hub.url)
    assert sorted(set(repo.files) - {".gitattributes"}) == MODEL_FILES  # the stray pickle is deleted
    assert repo.commits[-1]["deleted"] == ["pytorch_model.bin"]


def test_push_needs_a_token_and_an_existing_model(hub, hub_zoo):
    with pytest.raises(ZooError, match="HF_TOKEN"):
        push_model("hub-digits", zoo=hub_zoo, endpoint=hub.url)
    with pytest.raises(ZooError, match="No model named 'nope'"):
        push_model("nope", zoo=hub_zoo, token=TOKEN, endpoint=hub.url)
    with pytest.raises(ZooError, match="owner/name"):
        push_model("hub-digits", repo_id="a/b/c", zoo=hub_zoo, token=TOKEN, endpoint=hub.url)
    assert hub.repos == {}


def test_pull_of_a_recorded_repo_lands_a_model_that_predicts_like_the_original(hub, hub_zoo, tmp_path):
    files = {name: (hub_zoo / "hub-digits" / name).read_bytes() for name in MODEL_FILES}
    hub.add_repo("someone/digits", files)
    zoo = tmp_path / "zoo"
    assert pull_model("someone/digits", zoo=zoo, endpoint=hub.url) == "digits"
    assert sorted(p.name for p in (zoo / "digits").iterdir()) == MODEL_FILES
    assert predict("digits", IMAGES, zoo=zoo) == predict("hub-digits", IMAGES, zoo=hub_zoo)
    assert "# digits" in (zoo / "digits" / "README.md").read_text()  # the card names the local model
    with pytest.raises(ZooError, match="already exists"):
        pull_model("someone/digits", zoo=zoo, endpoint=hub.url)
    assert pull_model("someone/digits", zoo=zoo, endpoint=hub.url, overwrite=True) == "digits"
    assert pull_model("someone/digits", name="mine", zoo=zoo, endpoint=hub.url) == "mine"
    assert not [p for p in zoo.iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("case, reason", [
    ("pickle", "pytorch_model.bin: pickled weights can run code"),
    ("extra", "unexpected file"),
    ("plain-timm", "not a Transfer Zoo model.*--backbone hf-hub:someone/bad"),
    ("wrong-shape", "wrong shape"),
    ("bad-json", "transfer.json is not valid JSON"),
    ("missing", "no such repository"),
])
def test_pull_refuses_bad_repositories_and_writes_nothing(case, reason, hub, hub_zoo, tmp_path):
    files = {name: (hub_zoo / "hub-digits" / name).read_bytes() for name in MODEL_FILES}
    if case == "pickle":
        files["pytorch_model.bin"] = b"\x80\x04pickle"
    elif case == "extra":
        files["notes/script.py"] = b"print(1)"
    elif case == "plain-timm":
        files.pop("transfer.json")
    elif case == "wrong-shape":
        state = safetensors.torch.load_file(str(hub_zoo / "hub-digits" / "model.safetensors"))
        state["classifier.weight"] = torch.zeros(3, state["classifier.weight"].shape[1])
        files["model.safetensors"] = safetensors.torch.save(state)
    elif case == "bad-json":
        files["transfer.json"] = b"{oops"
    if case != "missing":
        hub.add_repo("someone/bad", files)
    zoo = tmp_path / "zoo"
    with pytest.raises(ZooError, match=reason):
        pull_model("someone/bad", zoo=zoo, endpoint=hub.url)
    assert [entry.name for entry in list_entries(zoo=zoo) if not entry.builtin] == []
    assert not zoo.exists() or not [p for p in zoo.iterdir() if p.name != "cache"]


def test_list_hub_models_shows_this_projects_models_of_a_namespace(hub, hub_zoo, monkeypatch):
    push_model("hub-digits", zoo=hub_zoo, token=TOKEN, endpoint=hub.url)
    push_model("hub-digits", repo_id="team/shared", zoo=hub_zoo, token=TOKEN, endpoint=hub.url)
    hub.add_repo("tester/not-ours", {"README.md": b"---\ntags:\n- other\n---\n# hi\n"})
    rows = list_hub_models(token=TOKEN, endpoint=hub.url)  # default: the token's user
    assert [row["repo_id"] for row in rows] == ["tester/hub-digits"]
    assert rows[0]["strategy"] == "feature-extractor" and rows[0]["url"] == f"{hub.url}/tester/hub-digits"
    assert [row["repo_id"] for row in list_hub_models("team", endpoint=hub.url)] == ["team/shared"]
    monkeypatch.setenv("ZOO_HUB_NAMESPACE", "team")
    assert [row["repo_id"] for row in list_hub_models(token=TOKEN, endpoint=hub.url)] == ["team/shared"]


def test_offline_every_hub_call_is_a_clear_error_and_the_local_zoo_works(hub_zoo, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for call in (lambda: push_model("hub-digits", zoo=hub_zoo, token=TOKEN),
                 lambda: pull_model("someone/digits", zoo=hub_zoo),
                 lambda: list_hub_models("someone")):
        with pytest.raises(ZooError, match="HF_HUB_OFFLINE"):
            call()
    assert predict("hub-digits", IMAGES[:1], zoo=hub_zoo)
    done = run_cli("zoo", "push", "hub-digits", "--zoo", str(hub_zoo), env={"HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN})
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert "local zoo works" in done.stderr and TOKEN not in done.stdout + done.stderr


def test_cli_push_hub_list_and_pull_through_hf_endpoint(hub, hub_zoo, tmp_path):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf")}
    pushed = run_cli("zoo", "push", "hub-digits", "--zoo", str(hub_zoo), "--repo-id", "tester/cli-digits", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().splitlines()[-1] == f"{hub.url}/tester/cli-digits"
    assert TOKEN not in pushed.stdout + pushed.stderr
    listed = run_cli("zoo", "hub-list", "--json", env=env)
    assert [row["repo_id"] for row in json.loads(listed.stdout)] == ["tester/cli-digits"]
    zoo = tmp_path / "zoo"
    pulled = run_cli("zoo", "pull", "tester/cli-digits", "--zoo", str(zoo), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert predict("cli-digits", IMAGES, zoo=zoo) == predict("hub-digits", IMAGES, zoo=hub_zoo)
    refused = run_cli("zoo", "pull", "tester/cli-digits", "--zoo", str(zoo), env=env)
    assert refused.returncode == 2 and "already exists" in refused.stderr and "Traceback" not in refused.stderr


def test_a_timm_model_on_the_hub_is_a_backbone_and_needs_no_network_once_cached(hub, digits_small, tmp_path):
    import timm

    net = timm.create_model("test_efficientnet", pretrained=False)
    timm.models.save_for_hf(net, tmp_path / "tiny", safe_serialization=True)
    hub.add_repo("someone/tiny-net", {name: (tmp_path / "tiny" / name).read_bytes()
                                      for name in ("config.json", "model.safetensors")})
    hub.add_repo("someone/pickled-net", {"config.json": (tmp_path / "tiny" / "config.json").read_bytes(),
                                         "pytorch_model.bin": b"\x80\x04pickle"})
    zoo = tmp_path / "zoo"
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    done = run_cli("transfer", "fit", str(digits_small), "--backbone", "hf-hub:someone/tiny-net", "--image-size", "32",
                   "--strategy", "feature-extractor", "--zoo", str(zoo), "--name", "on-tiny", "--json", "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    entry = read_entry("on-tiny", zoo=zoo)
    assert entry.spec.architecture == "test_efficientnet" and entry.info["backbone"]["source"] == "hub"
    saved = safetensors.torch.load_file(str(entry.path / "model.safetensors"))
    hub_weights = safetensors.torch.load_file(str(tmp_path / "tiny" / "model.safetensors"))
    learned = [key for key in hub_weights if key.endswith(".weight") and not key.startswith("classifier.")]
    assert len(learned) > 20 and all(torch.equal(saved[key], hub_weights[key]) for key in learned)  # the Hub's weights

    refused = run_cli("transfer", "fit", str(digits_small), "--backbone", "hf-hub:someone/pickled-net",
                      "--zoo", str(zoo), env=env)
    assert refused.returncode == 2 and "only pickled weights" in refused.stderr and "Traceback" not in refused.stderr

    offline = run_python(
        "import sys\n"
        "from zoo import ZooError\n"
        "from zoo.predict import predict\n"
        "from zoo.catalog import resolve_weights\n"
        "print(resolve_weights('hf-hub:someone/tiny-net').source)\n"  # from the Hugging Face cache
        "print(predict('on-tiny', [sys.argv[1]], zoo=sys.argv[2])[0][0]['label'])\n"
        "try:\n"
        "    resolve_weights('hf-hub:someone/never-fetched')\n"
        "except ZooError as error:\n"
        "    print(error)\n",
        IMAGES[0], str(zoo), env={**env, "HF_HUB_OFFLINE": "1"},
    )
    assert offline.returncode == 0, offline.stderr
    source, label, error = offline.stdout.strip().splitlines()[-3:]
    assert source == "hub" and label in [str(d) for d in range(10)]
    assert "cannot be reached" in error and "tf_efficientnet_lite0" in error


@pytest.mark.live_hub
@pytest.mark.skipif(not os.environ.get("HF_TOKEN"), reason="needs HF_TOKEN (a token with write access)")
def test_live_round_trip_push_list_pull_delete(hub_zoo, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    token = os.environ["HF_TOKEN"]
    api = HfApi(token=token)
    namespace = os.environ.get("ZOO_HUB_NAMESPACE") or api.whoami()["name"]
    repo_id = f"{namespace}/transfer-zoo-test-{uuid.uuid4().hex[:8]}"
    try:
        url = push_model("hub-digits", repo_id=repo_id, private=True, zoo=hub_zoo, token=token)
        assert url.rstrip("/").endswith(repo_id)
        assert api.model_info(repo_id).private
        assert sorted(set(api.list_repo_files(repo_id)) - {".gitattributes"}) == MODEL_FILES
        assert repo_id in [row["repo_id"] for row in list_hub_models(namespace, token=token)]
        zoo = tmp_path / "zoo"
        assert pull_model(repo_id, name="live", zoo=zoo, token=token) == "live"
        assert predict("live", IMAGES, zoo=zoo) == predict("hub-digits", IMAGES, zoo=hub_zoo)
    finally:
        api.delete_repo(repo_id, missing_ok=True)
        shutil.rmtree(tmp_path / "zoo", ignore_errors=True)
