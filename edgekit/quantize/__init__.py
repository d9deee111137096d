"""Quantization, each target on its own machinery.

| target | schemes | machinery |
|---|---|---|
| executorch | int8 (static), int8-dynamic | XNNPACK's PT2E quantizer (torchao prepare / convert), lowered to XNNPACK |
| tflite | int8 (static), int8-dynamic, fp16 | litert-torch's PT2E quantizer; fp16 weights through its ai-edge-quantizer recipe |
| coreml | w8, w4, palette4 (weights only), w8a8 | coremltools.optimize.coreml on the ML Program; w8a8 from a PT2E-quantized export |
| onnx | int8 (static QDQ), int8-dynamic | onnxruntime.quantization |

Static schemes (`int8`, `w8a8`) calibrate activation ranges on samples of a dataset. Layers named
in `float_layers` (module paths of the model, e.g. `backbone.3`) stay in float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import EdgekitError

SCHEMES = {
    "executorch": ("int8", "int8-dynamic"),
    "tflite": ("int8", "int8-dynamic", "fp16"),
    "coreml": ("w8", "w4", "palette4", "w8a8"),
    "onnx": ("int8", "int8-dynamic"),
}
CALIBRATED = ("int8", "w8a8")
PT2E_SCHEMES = {("executorch", "int8"), ("executorch", "int8-dynamic"), ("tflite", "int8"), ("tflite", "int8-dynamic"),
                ("coreml", "w8a8")}
MIN_CALIBRATION = 32
DEFAULT_CALIBRATION = 256


class QuantizationError(EdgekitError):
    """A scheme, calibration set or layer list a user gave is wrong."""


@dataclass
class QuantSpec:
    """What the backends need: the scheme, calibration inputs (N x C x H x W) and the layers left float."""

    scheme: str
    calib: torch.Tensor | None = None
    float_layers: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)  # for the manifest: calibration set, sizes

    @property
    def dynamic(self) -> bool:
        return self.scheme.endswith("-dynamic")


def check_scheme(target: str, scheme: str) -> None:
    allowed = SCHEMES.get(target, ())
    if scheme not in allowed:
        others = [t for t, s in SCHEMES.items() if scheme in s]
        where = f"; it is a scheme of {', '.join(others)}" if others else ""
        raise QuantizationError(
            f"target '{target}' has no quantization scheme '{scheme}' (choose {', '.join(allowed)}){where}"
        )


def needs_calibration(scheme: str) -> bool:
    return scheme in CALIBRATED


def module_prefixes(float_layers) -> list[str]:
    # the exporters see the model wrapped once (ExportWrapper.model), twice with Core ML's Normalize
    return [p for name in float_layers for p in (name, f"model.{name}", f"model.model.{name}")]


def node_in(node, float_layers) -> bool:
    """Whether an exported graph node belongs to one of the modules in `float_layers`."""
    prefixes = module_prefixes(float_layers)
    fqns = [v[0] for v in node.meta.get("nn_module_stack", {}).values()]
    return any(f == p or f.startswith(p + ".") for f in fqns for p in prefixes)


def check_float_layers(model: nn.Module, float_layers) -> None:
    names = {n for n, _ in model.named_modules()}
    for name in float_layers:
        if name not in names:
            import difflib

            near = difflib.get_close_matches(name, sorted(names), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; list them with model.named_modules()"
            raise QuantizationError(f"--float-layer '{name}' is not a module of the model{hint}")


def xnnpack_quantizer(dynamic: bool, float_layers=()):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    if float_layers:
        q.set_filter_function(lambda n: not node_in(n, float_layers))
    return q


def litert_quantizer(dynamic: bool, float_layers=()):
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class _Quantizer(PT2EQuantizer):
        """litert-torch's name filters do not match torch 2.13's module stacks: pre-mark float nodes as done."""

        def annotate(self, model):
            for n in model.graph.nodes:
                if node_in(n, float_layers):
                    n.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            return super().annotate(model)

    return _Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))


@torch.no_grad()
def pt2e(model: nn.Module, example: torch.Tensor, quantizer, calib: torch.Tensor | None, fold: bool = True):
    """Export, insert observers, calibrate sample by sample, convert: a GraphModule with (de)quantize ops."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    gm = torch.export.export(model, (example,)).module()
    gm = prepare_pt2e(gm, quantizer)
    for x in calib if calib is not None else example:
        gm(x.unsqueeze(0))
    gm = convert_pt2e(gm, fold_quantize=fold)
    gm.training = False  # exported modules refuse .eval()
    return gm


def layer_units(model: nn.Module, max_units: int = 16) -> list[str]:
    """Module paths to keep float as a whole when accuracy asks for it: the ancestors, at the deepest level
    that still gives at most `max_units` of them, of every convolution and linear layer."""
    leaves = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n]
    best: list[str] = []
    for depth in range(1, 8):
        units = list(dict.fromkeys(".".join(n.split(".")[:depth]) for n in leaves))
        if len(units) > max_units:
            break
        best = units
    return best or leaves[:max_units]


@torch.no_grad()
def output_divergence(reference: nn.Module, quantized, samples: torch.Tensor) -> float:
    """Mean KL(softmax(reference) || softmax(quantized)) over the samples, run one by one."""
    total = 0.0
    for x in samples:
        p = torch.log_softmax(reference(x.unsqueeze(0)).float(), 1)
        q = torch.log_softmax(quantized(x.unsqueeze(0)).float(), 1)
        total += float(torch.nn.functional.kl_div(q, p, log_target=True, reduction="batchmean"))
    return total / max(1, len(samples))


def rank_sensitivity(model: nn.Module, example: torch.Tensor, spec: QuantSpec, units: list[str], samples: int = 64,
                     progress=None) -> list[tuple[str, float]]:
    """Units ordered by how much keeping each in float (beside `spec.float_layers`) lowers the output divergence
    of the int8 model simulated in PyTorch (XNNPACK's quantizer), most harmful first."""
    calib, probe = spec.calib, spec.calib[:samples]
    scores = []
    for i, u in enumerate(units):
        if u in spec.float_layers:
            continue
        gm = pt2e(model, example, xnnpack_quantizer(spec.dynamic, (*spec.float_layers, u)), calib)
        scores.append((u, output_divergence(model, gm, probe)))
        if progress:
            progress(i + 1, len(units))
    return sorted(scores, key=lambda s: s[1])


IOS18_OR_LATER = ("iOS18", "macOS15", "watchOS11", "tvOS18", "visionOS2")
IOS17_OR_LATER = IOS18_OR_LATER + ("iOS17", "macOS14", "watchOS10", "tvOS17", "visionOS1")


def plan_quantization(target, scheme, loaded, opts, *, calib, calib_size, float_layers, max_drop, val_samples):
    """Check a quantization request against the target and load its data: (QuantSpec, dataset or None)."""
    from ..data import load_dataset

    check_scheme(target, scheme)
    if target == "executorch" and (opts.delegate or "xnnpack") != "xnnpack":
        raise QuantizationError(f"--quantize {scheme} on ExecuTorch uses the XNNPACK quantizer: drop --delegate "
                                f"{opts.delegate} or use --delegate xnnpack")
    if target == "coreml" and scheme == "w4" and opts.min_deployment_target not in IOS18_OR_LATER:
        raise QuantizationError("--quantize w4 (int4 weights) needs Core ML 8: add --min-target iOS18 (or macOS15)")
    if target == "coreml" and scheme == "w8a8" and opts.min_deployment_target not in IOS17_OR_LATER:
        raise QuantizationError("--quantize w8a8 (int8 activations) needs Core ML 7: add --min-target iOS17 or later")
    weight_only = scheme in ("fp16", "w8", "w4", "palette4")
    if weight_only and float_layers:
        raise QuantizationError(f"--float-layer applies to the int8 / w8a8 schemes, not '{scheme}'")
    if weight_only and max_drop is not None:
        raise QuantizationError(f"--max-drop applies to the int8 / w8a8 schemes, not '{scheme}'")
    if max_drop is not None and max_drop < 0:
        raise QuantizationError(f"--max-drop {max_drop} must be at least 0 (accuracy points)")
    check_float_layers(loaded.model, float_layers)
    if calib_size < MIN_CALIBRATION:
        raise QuantizationError(f"--calib-size {calib_size} is too small; calibrate on at least {MIN_CALIBRATION} "
                                f"images (default {DEFAULT_CALIBRATION})")
    dataset = None
    if calib:
        card = loaded.card
        dataset = load_dataset(calib, card.input_size, card.mean, card.std, calib_size=calib_size,
                               val_limit=val_samples)
        if len(dataset.calib) < MIN_CALIBRATION:
            raise QuantizationError(f"the calibration set '{calib}' has {len(dataset.calib)} images; calibrate on at "
                                    f"least {MIN_CALIBRATION}")
        if dataset.num_classes != card.num_classes and max_drop is not None:
            raise QuantizationError(f"--max-drop measures accuracy, but the model has {card.num_classes} classes and "
                                    f"'{calib}' has {dataset.num_classes}; give data the model was trained on")
    elif needs_calibration(scheme) or max_drop is not None:
        what = f"--quantize {scheme} calibrates activations" if needs_calibration(scheme) else "--max-drop measures accuracy"
        raise QuantizationError(f"{what}: give data with --calib (digits, fashion-mnist[:DIR] or imagefolder:DIR)")
    calib_x = dataset.calib.x if dataset is not None and needs_calibration(scheme) else None
    info = {"scheme": scheme}
    if dataset is not None:
        info["calibration"] = {"data": dataset.name, "samples": len(dataset.calib) if calib_x is not None else 0,
                               "split": "train (seeded subset)"}
    return QuantSpec(scheme, calib_x, tuple(float_layers), info), dataset


def _top1_one_by_one(run, split) -> torch.Tensor:
    """Top-1 of `run` (a batch-1 program) on every sample of `split`, in order."""
    from ..data import ordered_batches

    return torch.tensor([int(run(x[i : i + 1]).argmax()) for x, _ in ordered_batches(split) for i in range(len(x))])


def _predictions(backend, path, manifest, export_model, example, spec, split):
    """Top-1 of the artifact on `split`, run in its runtime; else (Core ML off macOS) its PT2E simulation in
    PyTorch where the scheme has one. Returns (predictions or None, how they were measured)."""
    reason = backend.runnable(manifest)
    if reason is None:
        runner = backend.load(path, manifest)
        return _top1_one_by_one(lambda x: runner.run(x.numpy()), split), f"{manifest['target']} runtime"
    if (manifest["target"], spec.scheme) in PT2E_SCHEMES:
        gm = pt2e(export_model, example, xnnpack_quantizer(spec.dynamic, spec.float_layers), spec.calib)
        with torch.no_grad():
            preds = _top1_one_by_one(gm, split)
        return preds, f"PyTorch simulation of the int8 program ({reason.split(';')[0]})"
    return None, reason


def control_accuracy(backend, export_model, example, opts, dataset, max_drop, build, path, manifest, progress=None):
    """Accuracy before / after on the validation split, top-1 agreement with the float model, and the
    `max_drop` loop: keep the most harmful layer units float, one at a time, until the drop is within it."""
    from ..data import predict

    spec = opts.quant
    q = dict(spec.info)
    manifest["quantization"] = q
    if dataset is None or dataset.num_classes != int(manifest["model"]["num_classes"]):
        q["float_layers"] = list(spec.float_layers)
        q["accuracy"] = {"status": "not measured", "reason": "give --calib with data of the model's classes"}
        return manifest
    val = dataset.val
    float_preds = predict(export_model, val)
    acc_float = int((float_preds == val.y).sum()) / len(val)

    def measure(m: dict) -> dict:
        preds, how = _predictions(backend, path, m, export_model, example, spec, val)
        if preds is None:
            return {"status": "not measured", "reason": how, "float": acc_float}
        acc = int((preds == val.y).sum()) / len(val)
        return {"status": "measured", "split": "val", "samples": len(val), "measured_with": how, "float": acc_float,
                "quantized": acc, "drop_points": round(100 * (acc_float - acc), 3),
                "agreement": int((preds == float_preds).sum()) / len(val)}

    acc = measure(manifest)
    steps = [{"float_layers": list(spec.float_layers), "drop_points": acc.get("drop_points")}]
    if max_drop is not None and acc["status"] == "measured" and acc["drop_points"] > max_drop:
        units = layer_units(export_model.model)
        ranked = rank_sensitivity(export_model, example, spec, units, progress=progress)
        for unit, divergence in ranked:
            spec.float_layers = (*spec.float_layers, unit)
            manifest = build()
            acc = measure(manifest)
            steps.append({"float_layers": list(spec.float_layers), "added": unit, "simulated_divergence": divergence,
                          "drop_points": acc["drop_points"]})
            if acc["drop_points"] <= max_drop:
                break
        else:
            raise QuantizationError(
                f"--max-drop {max_drop}: the drop is still {acc['drop_points']:.2f} points with every layer unit float "
                f"({', '.join(units)}); raise --max-drop or choose another scheme"
            )
        manifest["quantization"] = q
    q["float_layers"] = list(spec.float_layers)
    q["accuracy"] = acc
    if max_drop is not None:
        q["max_drop"] = {"points": max_drop, "steps": steps}
    return manifest
