"""Several processes, as on a multi-GPU machine: `torchrun` (what `accelerate launch` runs) on the CPU, gloo.

A 2-process fine-tune of the 1,797 digits saves exactly one model, which reloads in a fresh process,
scores within 3 points of the same fit in one process, and really trained in both processes; a
process that fails ends the run with its error and leaves nothing in the zoo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, run_cli, run_python

SETTINGS = ["--strategy", "fine-tune", "--image-size", "32", "--epochs", "2", "--workers", "0", "--quiet"]


def torchrun(*args: str, processes: int = 2, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def user_folders(zoo) -> list[str]:
    return sorted(path.name for path in zoo.iterdir() if path.name != "cache")


def test_two_processes_save_one_model_as_good_as_one_process(digits_dir, tmp_path):
    one_zoo, two_zoo = tmp_path / "one", tmp_path / "two"
    one = run_cli("transfer", "fit", str(digits_dir), "--zoo", str(one_zoo), "--name", "digits", "--json", *SETTINGS,
                  env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert one.returncode == 0, one.stderr
    two = torchrun("-m", "transfer", "fit", str(digits_dir), "--zoo", str(two_zoo), "--name", "digits", "--json",
                   *SETTINGS)
    assert two.returncode == 0, two.stderr[-3000:]
    [line] = [line for line in two.stdout.splitlines() if line.startswith("{")]  # the main process reports
    together, alone = json.loads(line), json.loads(one.stdout.strip().splitlines()[-1])
    assert user_folders(two_zoo) == ["digits"]  # one model, no staging left behind
    info = json.loads((two_zoo / "digits" / "transfer.json").read_text())
    assert info["settings"]["processes"] == 2 and alone["num_val"] == together["num_val"] == 359
    trained = [row for row in info["history"] if row["phase"] == "train" and row["epoch"] > 0]
    assert [row["epoch"] for row in trained] == [1, 2] and all(row["train_loss"] > 0 for row in trained)
    assert trained[-1]["val_accuracy"] >= 0.75  # both processes' gradients made a working network
    assert abs(together["metrics"]["accuracy"] - alone["metrics"]["accuracy"]) <= 0.03
    # the model is an ordinary zoo model: a fresh process loads it and reads the digits
    images = [str(sorted((digits_dir / digit).iterdir())[-1]) for digit in ("0", "3", "7")]
    done = run_python("import json, sys\nfrom zoo.predict import predict\n"
                      "print(json.dumps([p[0]['label'] for p in predict('digits', sys.argv[2:], zoo=sys.argv[1])]))",
                      str(two_zoo), *images)
    assert done.returncode == 0, done.stderr
    labels = json.loads(done.stdout.strip().splitlines()[-1])
    assert sum(label == digit for label, digit in zip(labels, ("0", "3", "7"))) >= 2, labels


def test_a_failing_process_ends_the_run_with_its_error_and_saves_nothing(digits_small, tmp_path):
    zoo = tmp_path / "zoo"
    done = torchrun(str(ROOT / "tests" / "helpers" / "failing_rank.py"), "fit", str(digits_small), "--zoo", str(zoo),
                    "--name", "never", *SETTINGS)
    assert done.returncode != 0
    assert "process 1 failed on purpose, in training" in done.stderr
    assert user_folders(zoo) == []  # nothing half-written: no model, no staging folder
