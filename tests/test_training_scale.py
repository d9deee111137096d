"""Training at scale, checked on the CPU: devices and precision, torchrun data parallelism (gloo), resume under
DDP, the scale options (EMA, accumulation, clipping, augmentation).

The two-process runs start `torchrun` (torch.distributed.run) as users do. The model is MobileViG-Ti at 32x32: it
has batch norms (synchronised across ranks) and no dropout, whose masks are drawn per rank and so could not match
a one-process run's. Runs are compared by the relative L2 distance of their weights: the sums over two half
batches round differently from the sum over one batch (a gradient agrees to ~1e-8), and Adam's first steps, which
move each weight by about the learning rate whatever its gradient's size, turn that into differences of ~lr in
single weights whose gradients are near zero, not in the network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import edgekit
from edgekit.models.weights import read_checkpoint

from .conftest import CLI_ENV, assert_user_error, run_cli
from .test_recipe import small_recipe

MODEL = "mobilevig_ti"
COMMON = ["--data", "digits", "--input-size", "32", "--num-classes", "10", "--limit", "192", "--device", "cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(nproc: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N -m edgekit ARGS` on this machine (gloo), one thread per process."""
    env = dict(os.environ, **CLI_ENV, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "edgekit", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in read_checkpoint(path)["state_dict"].items() if v.is_floating_point()}


def assert_close(a: dict, b: dict, tol: float = 1e-3) -> None:
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    assert float(diff / torch.cat([a[k].flatten() for k in a]).norm()) <= tol


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """One process, global batch 32, two epochs (the reference the DDP runs must match)."""
    out = tmp_path_factory.mktemp("one") / "ckpt.pt"
    proc = run_cli("train", MODEL, *COMMON, "--epochs", "2", "--batch-size", "32", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_two_processes_train_what_one_process_trains(one_process, tmp_path):
    out = tmp_path / "ddp.pt"
    proc = torchrun(2, "train", MODEL, *COMMON, "--epochs", "2", "--batch-size", "32", "--out", str(out), "--json",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # rank 0 alone prints: one JSON document
    assert report["world_size"] == 2
    assert_close(weights(one_process), weights(out))
    # the metrics are reduced over the ranks: the same validation accuracy as one process measures
    one = read_checkpoint(one_process)["provenance"]["history"]
    val = report["data"]["val"]
    for h1, h2 in zip(one, report["history"], strict=True):  # within one image of the validation split
        assert abs(h1["val_accuracy"] - h2["val_accuracy"]) <= 1 / val + 1e-9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.pt"]  # one checkpoint, no rank's stray files


def test_resume_under_ddp_retraces_the_uninterrupted_run(one_process, tmp_path):
    out = tmp_path / "ckpt.pt"

    def stop_in_epoch_two(step, total, loss):
        if step > total // 2 + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # interrupted in its second epoch: epoch 1's checkpoint stays
        edgekit.train(MODEL, "digits", out=out, epochs=2, batch_size=32, input_size=32, num_classes=10, limit=192,
                      device="cpu", progress=stop_in_epoch_two)  # fmt: skip
    assert read_checkpoint(out)["train_state"]["epoch"] == 1
    # two processes continue it: the optimizer, the schedule and the batches carry on as one process's would
    proc = torchrun(2, "train", MODEL, *COMMON, "--epochs", "2", "--batch-size", "32", "--out", str(out),
                    "--resume", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close(weights(one_process), weights(out))


def test_the_issue_command_writes_one_checkpoint_compile_accepts(tmp_path):
    out = tmp_path / "ckpt.pt"
    proc = torchrun(2, "train", "mobilenetv2_100", "--data", "digits", "--epochs", "1", "--input-size", "32",
                    "--num-classes", "10", "--limit", "128", "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote") == 1  # rank 0 prints
    proc = run_cli("compile", str(out), "--target", "onnx", "--out", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout


def test_distill_under_ddp_matches_one_process(one_process, tmp_path):
    args = ["distill", MODEL, "--teacher", str(one_process), "--data", "digits", "--input-size", "32", "--limit",
            "128", "--epochs", "1", "--batch-size", "32", "--device", "cpu"]  # fmt: skip
    one = run_cli(*args, "--out", str(tmp_path / "one.pt"))
    assert one.returncode == 0, one.stderr
    two = torchrun(2, *args, "--out", str(tmp_path / "two.pt"), cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_close(weights(tmp_path / "one.pt"), weights(tmp_path / "two.pt"))


def test_oto_under_ddp_zeroes_the_groups_one_process_zeroes(tmp_path):
    args = ["prune", MODEL, "--method", "oto", "--ratio", "0.3", "--steps", "12", "--data", "digits",
            "--input-size", "32", "--num-classes", "10", "--train-device", "cpu", "--json"]  # fmt: skip
    one = run_cli(*args, "--out", str(tmp_path / "one.pt"))
    assert one.returncode == 0, one.stderr
    two = torchrun(2, *args, "--out", str(tmp_path / "two.pt"), cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    plans = [read_checkpoint(tmp_path / f"{n}.pt")["plans"] for n in ("one", "two")]
    kept = [[g["keep"] for p in plan for g in p["groups"]] for plan in plans]
    assert kept[0] == kept[1] and kept[0]
    assert json.loads(two.stdout)["oto"]["world_size"] == 2
    assert_close(weights(tmp_path / "one.pt"), weights(tmp_path / "two.pt"), tol=1e-3)


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    out = tmp_path / "bf16.pt"
    proc = run_cli("train", MODEL, *COMMON, "--epochs", "1", "--batch-size", "32", "--precision", "bf16",
                   "--out", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["precision"] == "bf16" and report["device"] == "cpu"
    assert torch.isfinite(torch.tensor(report["history"][0]["train_loss"]))
    assert all(v.dtype == torch.float32 for v in weights(out).values())  # the weights stay fp32 (autocast)


@pytest.mark.parametrize(
    "option,needle",
    [
        (["--device", "cuda"], "--device cuda: no CUDA device is available here"),
        (["--device", "tpu"], "--device 'tpu' is not a device"),
        (["--precision", "fp8"], "--precision 'fp8' is not one of"),
        (["--augment", "mosaic"], "--augment 'mosaic' is not one of"),
        (["--accumulate", "0"], "--accumulate 0 is out of range"),
        (["--ema", "1.5"], "--ema 1.5 must be a decay between 0 and 1"),
        (["--clip-grad", "-1"], "--clip-grad -1.0 must be a positive norm"),
    ],
)
def test_a_wrong_scale_option_is_one_line(option, needle, tmp_path):
    args = ["train", MODEL, "--data", "digits", "--epochs", "1", "--input-size", "32", "--out", str(tmp_path / "x.pt")]
    proc = run_cli(*args, *option)
    assert_user_error(proc, needle)
    assert not (tmp_path / "x.pt").exists()


def test_accumulation_and_clipping_and_ema(tmp_path):
    base = ["train", MODEL, *COMMON, "--epochs", "1"]
    # two batches of 16 per step: the same number of images per step as one batch of 32, half the steps of 16
    acc = run_cli(*base, "--batch-size", "16", "--accumulate", "2", "--clip-grad", "1.0", "--out",
                  str(tmp_path / "acc.pt"), "--json")  # fmt: skip
    assert acc.returncode == 0, acc.stderr
    ema = run_cli(*base, "--batch-size", "32", "--ema", "0.9", "--out", str(tmp_path / "ema.pt"), "--json")
    assert ema.returncode == 0, ema.stderr
    plain = run_cli(*base, "--batch-size", "32", "--out", str(tmp_path / "plain.pt"), "--json")
    assert plain.returncode == 0, plain.stderr
    blob = read_checkpoint(tmp_path / "ema.pt")
    state = blob["train_state"]["ema"]
    # the finished checkpoint holds the average, and the training state keeps it for --resume
    averaged = {k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")}
    for k, v in blob["state_dict"].items():
        assert torch.equal(v, averaged[k]), k
    a, b = weights(tmp_path / "ema.pt"), weights(tmp_path / "plain.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert json.loads(acc.stdout)["history"][0]["images_per_s"] > 0


def test_augmented_training_runs_and_evaluation_is_unchanged(tmp_path):
    out = tmp_path / "aug.pt"
    proc = run_cli("train", MODEL, *COMMON, "--epochs", "1", "--batch-size", "32", "--augment", "deit",
                   "--out", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    # evaluation is the card's resize + normalise: the untrained model's accuracy is the same as without augment
    plain = run_cli("train", MODEL, *COMMON, "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "p.pt"),
                    "--json")  # fmt: skip
    assert report["val_accuracy_before"] == json.loads(plain.stdout)["val_accuracy_before"]
    assert report["history"][0]["train_loss"] != json.loads(plain.stdout)["history"][0]["train_loss"]
    with edgekit.models.trusted_code():
        assert edgekit.load_model(str(out)).model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_a_recipe_under_torchrun_trains_on_every_rank_and_runs_the_rest_on_rank_0(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_DB", str(tmp_path / "latency.sqlite"))
    recipe = small_recipe(tmp_path)
    out = tmp_path / "out"
    proc = torchrun(2, "run", str(recipe), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "run.json").read_text())
    assert {s["name"]: s["status"] for s in manifest["steps"]} == {
        "train": "ran", "prune": "ran", "distill": "ran", "compile-onnx": "ran", "profile-onnx": "ran",
    }  # fmt: skip
    assert proc.stdout.count("run complete") == 1  # rank 0 reports
    # what the two processes wrote is a complete cache: one process finds every step there
    again = run_cli("run", str(recipe), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    assert {s["status"] for s in json.loads(again.stdout)["steps"]} == {"cached"}
