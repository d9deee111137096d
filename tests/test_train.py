"""Training and distillation: they learn, resume exactly, keep pruning, and refuse bad input in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import edgekit
from edgekit.data import accuracy, load_dataset
from edgekit.distill import Distiller, cosine_lr, soft_kd
from edgekit.models import load_model
from tests.conftest import assert_user_error, run_cli

SMALL_NET = """
import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Dropout(0.1),
        )
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))
"""
FAST = dict(data="digits", input_size=16, val_limit=200, lr=1e-2, batch_size=32)


@pytest.fixture
def small_net(tmp_path):
    (tmp_path / "small_net.py").write_text(SMALL_NET)
    return f"{tmp_path / 'small_net.py'}:SmallNet"


@pytest.fixture(scope="module")
def small_net_one_epoch(tmp_path_factory):
    """SmallNet and its checkpoint after `train(epochs=1, **FAST)`, trained once for the tests that start from it."""
    root = tmp_path_factory.mktemp("small_net")
    (root / "small_net.py").write_text(SMALL_NET)
    ref = f"{root / 'small_net.py'}:SmallNet"
    edgekit.train(ref, out=root / "m.pt", epochs=1, **FAST)
    return ref, root / "m.pt"


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    """MobileOne-S0 trained one epoch on 64 digits: a teacher for the distillation input checks."""
    teacher = tmp_path_factory.mktemp("teacher") / "t.pt"
    edgekit.train("mobileone_s0", out=teacher, epochs=1, data="digits", input_size=32, limit=64, val_limit=32)
    return teacher


def state(path):
    return load_model(str(path)).model.state_dict()


def test_training_learns_digits_and_writes_a_checkpoint_every_command_takes(tmp_path, small_net):
    r = edgekit.train(small_net, out=tmp_path / "m.pt", epochs=3, **FAST)
    rep = r.report
    assert rep["val_accuracy_before"] < 0.3 and rep["val_accuracy"] > 0.8, rep["history"]
    assert [h["epoch"] for h in rep["history"]] == [1, 2, 3]
    assert rep["history"][-1]["train_loss"] < rep["history"][0]["train_loss"]
    # the checkpoint rebuilds the trained network (the accuracy is the model's, not the log's)
    m = load_model(str(tmp_path / "m.pt")).model
    data = load_dataset("digits", 16, val_limit=200)
    assert accuracy(m, data.val) == pytest.approx(rep["val_accuracy"])
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert blob["provenance"]["command"] == "train" and blob["provenance"]["data"]["spec"] == "digits"


def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, small_net):
    edgekit.train(small_net, out=tmp_path / "full.pt", epochs=2, **FAST)

    def stop_in_epoch_two(step, total, loss):
        if step > total // 2 + 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        edgekit.train(small_net, out=tmp_path / "part.pt", epochs=2, progress=stop_in_epoch_two, **FAST)
    blob = torch.load(tmp_path / "part.pt", weights_only=True)  # epoch 1's checkpoint, intact
    assert blob["train_state"]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    r = edgekit.train(small_net, out=tmp_path / "part.pt", epochs=2, resume=True, **FAST)
    assert [h["epoch"] for h in r.report["history"]] == [1, 2]
    a, b = state(tmp_path / "full.pt"), state(tmp_path / "part.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.xdist_group("small_net_one_epoch")
def test_resume_refuses_a_different_configuration(tmp_path, small_net_one_epoch):
    small_net, trained = small_net_one_epoch
    shutil.copyfile(trained, tmp_path / "m.pt")  # what edgekit.train(small_net, out=m.pt, epochs=1, **FAST) writes
    before = (tmp_path / "m.pt").read_bytes()
    proc = run_cli(
        "train",
        small_net,
        "--data",
        "digits",
        "--input-size",
        "16",
        "--batch-size",
        "32",
        "--lr",
        "0.1",
        "--epochs",
        "2",
        "--out",
        str(tmp_path / "m.pt"),
        "--resume",
    )
    assert_user_error(proc, "was trained with lr=0.01, not 0.1")
    assert (tmp_path / "m.pt").read_bytes() == before
    proc = run_cli("train", small_net, "--out", str(tmp_path / "new.pt"), "--resume")
    assert_user_error(proc, "does not exist yet; run without --resume")


def test_cosine_schedule_with_warmup():
    lrs = [cosine_lr(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.001


@pytest.mark.xdist_group("small_net_one_epoch")
def test_fine_tuning_keeps_unstructured_pruning_zeros(tmp_path, small_net_one_epoch):
    _, trained = small_net_one_epoch
    edgekit.prune(str(trained), "magnitude", 0.6, out=tmp_path / "p.pt")
    before = state(tmp_path / "p.pt")
    edgekit.train(str(tmp_path / "p.pt"), out=tmp_path / "ft.pt", epochs=1, **FAST)
    after = state(tmp_path / "ft.pt")
    for k in ("body.3.weight",):  # the first conv and the head are kept whole
        zeros = before[k] == 0
        assert zeros.float().mean() > 0.3, k
        assert torch.equal(after[k] == 0, zeros), k  # the same weights are zero ...
    assert not torch.equal(after["body.3.weight"], before["body.3.weight"])  # ... and the others trained


def test_fine_tuning_a_structured_pruned_checkpoint_keeps_its_architecture(tmp_path):
    ckpt = tmp_path / "p.pt"
    edgekit.prune("mobileone_s0", "magnitude", 0.5, structured=True, out=ckpt, num_classes=10, input_size=32)
    params = sum(p.numel() for p in load_model(str(ckpt)).model.parameters())
    r = edgekit.train(str(ckpt), out=tmp_path / "ft.pt", epochs=1, data="digits", limit=128, val_limit=64)
    ft = load_model(str(tmp_path / "ft.pt")).model
    assert sum(p.numel() for p in ft.parameters()) == params
    assert r.report["val_accuracy"] is not None
    res = edgekit.compile(str(tmp_path / "ft.pt"), "onnx", out=tmp_path / "art")
    assert res.manifest["verification"]["status"] == "passed"


def test_soft_kd_is_zero_when_the_student_matches_the_teacher():
    t = torch.randn(8, 10)
    assert float(soft_kd(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_kd(torch.randn(8, 10), t, 4.0)) > 0.01


def test_distillation_head_learns_from_the_teacher_and_class_head_from_labels():
    teacher = torch.nn.Linear(4, 3)
    student = torch.nn.Linear(4, 3)
    d = Distiller(student, teacher, hard=True)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    cls = torch.randn(16, 3, requires_grad=True)
    dist = torch.randn(16, 3, requires_grad=True)
    d.loss((cls, dist), x, y).backward()
    # hard distillation: the distillation head's target is the teacher's top-1, not the label
    expected = torch.autograd.grad(0.5 * torch.nn.functional.cross_entropy(dist, teacher(x).argmax(1)), dist)[0]
    torch.testing.assert_close(dist.grad, expected)


def test_distill_cli_with_soft_labels_and_a_feature_adapter_for_a_pruned_student(tmp_path):
    teacher, student = tmp_path / "t.pt", tmp_path / "s.pt"
    edgekit.train("mobileone_s0", out=teacher, epochs=1, data="digits", input_size=32, limit=256, val_limit=64)
    edgekit.prune(str(teacher), "magnitude", 0.5, structured=True, out=student)
    proc = run_cli(
        "distill",
        str(student),
        "--teacher",
        str(teacher),
        "--data",
        "digits",
        "--limit",
        "128",
        "--feature",
        "stage3",
        "--out",
        str(tmp_path / "kd.pt"),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["teacher"] == str(teacher) and 0 <= rep["teacher_val_accuracy"] <= 1
    blob = torch.load(tmp_path / "kd.pt", weights_only=True)
    assert blob["provenance"]["command"] == "distill"
    adapters = blob["train_state"]["extra_params"]
    assert list(adapters) == ["adapters.0.weight"]  # the pruned stage is narrower: a 1x1 adapter maps it
    assert adapters["adapters.0.weight"].shape[0] > adapters["adapters.0.weight"].shape[1]


@pytest.mark.xdist_group("digits_teacher")  # one worker trains the teacher once
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--teacher", "mobileone_s0"], "the teacher 'mobileone_s0' has 1000 classes and 'digits' has 10"),
        (["--teacher", "{t}", "--feature", "nope:stage3"], "the student has no layer 'nope'"),
        (["--teacher", "{t}", "--alpha", "2"], "--alpha 2.0 must be between 0 and 1"),
    ],
)
def test_distill_bad_input(tmp_path, digits_teacher, args, needle):
    teacher = digits_teacher
    out = tmp_path / "kd.pt"
    proc = run_cli("distill", str(teacher), *[a.format(t=teacher) for a in args], "--out", str(out), "--limit", "64")
    assert_user_error(proc, needle)
    assert not out.exists()


def test_train_refuses_a_model_with_other_classes(tmp_path, user_model_file):
    proc = run_cli(
        "train", f"{user_model_file}:TinyNet", "--data", "digits", "--out", str(tmp_path / "m.pt"), "--input-size", "16"
    )
    assert_user_error(proc, "has 5 classes and 'digits' has 10")
    assert not (tmp_path / "m.pt").exists()
