"""Loading checkpoints: official formats load; bad files fail in one line and are never executed."""

from __future__ import annotations

import pytest
import torch

import edgekit
from edgekit.errors import WeightsError
from edgekit.models import load_model, save_checkpoint

from .conftest import assert_user_error, official_state_dict, run_cli


@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict", "module_prefix"])
def test_official_checkpoint_loads_as_published(tmp_path, wrap):
    sd = official_state_dict("mobilevig_ti")
    if wrap == "module_prefix":
        blob = {f"module.{k}": v for k, v in sd.items()}
    elif wrap == "bare":
        blob = sd
    else:
        blob = {wrap: sd, "epoch": 300}
    path = tmp_path / "mobilevig_ti.pth"
    torch.save(blob, path)
    model = edgekit.create_model("mobilevig_ti", weights=path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1000)


def test_greedyvig_official_checkpoint_loads(tmp_path):
    sd = official_state_dict("greedyvig_s")
    torch.save({"model": sd}, tmp_path / "g.pth")
    model = edgekit.create_model("greedyvig_s", weights=tmp_path / "g.pth")
    assert torch.equal(model.state_dict()["backbone.3.3.mixer.cpe.pe.weight"], sd["backbone.3.3.mixer.cpe.pe.weight"])


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        edgekit.create_model("mobilevig_ti", weights=tmp_path / "nope.pth")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match="could not read weights file"):
        edgekit.create_model("mobilevig_ti", weights=path)


def test_mismatched_keys_list_the_first_missing_and_unexpected(tmp_path):
    sd = official_state_dict("mobilevig_ti")
    sd.pop("head.weight")
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as e:
        edgekit.create_model("mobilevig_ti", weights=tmp_path / "bad.pth")
    msg = str(e.value)
    assert "1 missing (first: head.weight)" in msg and "1 unexpected (first: extra.weight)" in msg


def test_wrong_shapes_are_named(tmp_path):
    torch.save(official_state_dict("mobilevig_ti"), tmp_path / "ti.pth")
    with pytest.raises(WeightsError, match=r"of another shape \(first: head.weight \(1000, 512, 1, 1\) vs \(10, 512"):
        edgekit.create_model("mobilevig_ti", weights=tmp_path / "ti.pth", num_classes=10)


class Payload:
    """Unpickling this would create a marker file: a safe loader must never run it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"model": official_state_dict("mobilevig_ti"), "hook": Payload(marker)}, path)
    with pytest.raises(WeightsError, match="refused .* carries"):
        edgekit.create_model("mobilevig_ti", weights=path)
    assert not marker.exists()


def test_cli_bad_weights_one_line_exit_2_nothing_written(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload(marker)}, evil)
    bad = tmp_path / "bad.pth"
    torch.save({"head.weight": torch.zeros(2)}, bad)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_text("garbage")
    out = tmp_path / "out"
    for weights, needle in [
        (tmp_path / "missing.pth", "does not exist"),
        (corrupt, "could not read"),
        (bad, "does not fit this model"),
        (evil, "refused"),
    ]:
        proc = run_cli("compile", "mobilevig_ti", "--target", "onnx", "--weights", str(weights), "--out", str(out))
        assert_user_error(proc, needle)
        assert not out.exists() or not any(out.iterdir())
    assert not marker.exists()


def test_edgekit_checkpoint_is_a_model_reference(tmp_path):
    loaded = load_model("mobileone_s0", num_classes=4, input_size=64)
    path = save_checkpoint(loaded, tmp_path / "m.pt", provenance={"note": "test"})
    # readable with weights_only=True: plain tensors and containers only
    blob = torch.load(path, weights_only=True)
    assert blob["base"] == "mobileone_s0" and blob["num_classes"] == 4
    again = load_model(str(path))
    assert again.card.input_size == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), loaded.model(x))


def test_plain_state_dict_given_as_model_reference_is_explained(tmp_path):
    torch.save(official_state_dict("mobilevig_ti"), tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="is not an edgekit checkpoint; to load plain weights give a model name"):
        load_model(str(tmp_path / "w.pth"))
