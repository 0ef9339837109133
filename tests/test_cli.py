"""`python -m transfer` exactly as a user (or a script) runs it."""

from __future__ import annotations

import json

from conftest import ASSETS, run_cli


def test_fit_json_contract(tmp_path):
    done = run_cli("transfer", "fit", str(ASSETS / "digits"), "--image-size", "64", "--zoo", str(tmp_path),
                   "--name", "cli-digits", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("name", "strategy", "backbone", "classes", "num_train", "num_val", "metrics",
                "metrics_split", "train_seconds", "path"):
        assert key in result, key
    assert result["name"] == "cli-digits" and result["strategy"] == result["advice"]["strategy"]  # default: auto
    assert result["classes"] == [str(d) for d in range(10)]
    assert (result["num_train"], result["num_val"]) == (160, 40)
    assert result["metrics"]["accuracy"] > 0.5 and "macro_f1" in result["metrics"]  # chance: 0.10
    assert result["metrics_split"] == "val"
    assert (tmp_path / "cli-digits" / "model.safetensors").is_file()


def test_bad_input_is_one_line_without_traceback(tmp_path):
    done = run_cli("transfer", "fit", str(tmp_path / "missing"), "--zoo", str(tmp_path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr


def test_one_class_is_refused_with_the_fix(tmp_path):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "cats" / "cat.jpg").write_bytes((ASSETS / "photos" / "cat.jpg").read_bytes())
    done = run_cli("transfer", "fit", str(tmp_path / "data"), "--zoo", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "need at least 2 class folders" in done.stderr


def test_unknown_backbone_offline_names_what_works(tmp_path):
    done = run_cli("transfer", "fit", str(ASSETS / "digits"), "--backbone", "resnet18", "--zoo", str(tmp_path),
                   env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "tf_efficientnet_lite0" in done.stderr and "zoo:NAME" in done.stderr
