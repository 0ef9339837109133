"""Where a fit runs: devices, precision, and the Space's ZeroGPU decorator.

This machine has no GPU, so: a GPU asked for is refused in one line naming what there is; the
bf16 autocast path (what a GPU with bf16 runs) is run on the CPU and still learns, and its model is
saved in float32; on a ZeroGPU Space the app's handlers ask `spaces` for the GPU, elsewhere they
are left alone.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ASSETS, run_cli, run_python
from transfer import DataError
from transfer.engine import make_engine
from transfer.fit import fit
from zoo import ZooError
from zoo.devices import available_devices, resolve_device, resolve_precision


def test_devices_resolve_and_a_missing_gpu_is_refused_naming_what_there_is():
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu").type == "cpu"
    assert available_devices() == ["cpu"]  # this machine
    for name in ("cuda", "cuda:1", "mps"):
        with pytest.raises(ZooError, match=r"not available here \(available: cpu\)"):
            resolve_device(name)
    with pytest.raises(ZooError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ZooError, match="fp16 autocast needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(DataError, match="CUDA is not available here"):
        make_engine("cuda")


@pytest.mark.parametrize("command", [
    ("transfer", "fit", str(ASSETS / "digits")),
    ("transfer", "advise", str(ASSETS / "digits")),
    ("transfer", "compare", str(ASSETS / "digits")),
    ("zoo", "predict", "tf_efficientnet_lite0", str(ASSETS / "photos" / "cat.jpg")),
])
def test_cli_refuses_a_missing_gpu_in_one_line(command, tmp_path):
    done = run_cli(*command, "--device", "cuda", "--zoo", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: --device cuda: CUDA is not available here (available: cpu)."
    assert not [path for path in tmp_path.iterdir() if path.name != "cache"]  # nothing trained or saved


def test_bf16_autocast_trains_on_the_cpu_and_saves_float32(digits_small, zoo_path):
    result = fit(digits_small, strategy="fine-tune", precision="bf16", image_size=32, epochs=1, batch_size=16,
                 zoo=zoo_path, name="digits-bf16", workers=0)
    assert result.metrics["accuracy"] >= 0.5, result.history  # chance is 0.10
    settings = json.loads((result.path / "transfer.json").read_text())["settings"]
    assert (settings["precision"], settings["device"], settings["processes"]) == ("bf16", "cpu", 1)
    with open(result.path / "model.safetensors", "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    dtypes = {value["dtype"] for key, value in header.items() if key != "__metadata__"}
    assert dtypes == {"F32", "I64"}  # float32 weights (and BatchNorm's counters), never bf16
    code = ("import sys\nfrom zoo.predict import predict\n"
            "print(predict('digits-bf16', [sys.argv[2]], zoo=sys.argv[1], device='cpu')[0][0]['label'])\n")
    image = sorted((digits_small / "7").iterdir())[0]
    done = run_python(code, str(zoo_path), str(image))
    assert done.returncode == 0 and done.stdout.strip() in result.classes, done.stderr


def test_zero_gpu_spaces_get_their_decorator_and_other_places_do_not(tmp_path):
    code = (
        "import importlib.util, sys, types\n"
        "asked = {}\n"
        "spaces = types.ModuleType('spaces'); spaces.__spec__ = importlib.util.spec_from_loader('spaces', None)\n"
        "def GPU(duration=60):\n"
        "    def wrap(function):\n"
        "        asked[function.__name__] = duration\n"
        "        return function\n"
        "    return wrap\n"
        "spaces.GPU = GPU; sys.modules['spaces'] = spaces\n"
        "import app\n"
        "train = asked.get('train_model'); compare = asked.get('compare_strategies')\n"
        "print(sorted(asked), train and train(None, 'tf_efficientnet_lite0', 'shallow', '', 0, 0, 32, 120),\n"
        "      compare and compare(None, 'tf_efficientnet_lite0', 90), asked.get('predict_image'))\n"
    )
    on_zero_gpu = run_python(code, env={"SPACES_ZERO_GPU": "true", "ZOO_DIR": str(tmp_path)})
    assert on_zero_gpu.returncode == 0, on_zero_gpu.stderr
    names, train_seconds, compare_seconds, predict_seconds = on_zero_gpu.stdout.strip().splitlines()[-1].rsplit(" ", 3)
    assert eval(names) == ["compare_strategies", "predict_image", "predict_images", "train_model"]
    assert int(train_seconds) == 180 and int(compare_seconds) == 150  # the budget and a minute to spare
    assert int(predict_seconds) == 30
    elsewhere = run_python(code, env={"SPACES_ZERO_GPU": "", "ZOO_DIR": str(tmp_path)})
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout.strip().splitlines()[-1] == "[] None None None"  # the functions themselves
