"""The `edgekit` command: parsing and printing only; every command is a thin call into the package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import EdgekitError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="edgekit: vision models to phones, verified.")
zoo_app = typer.Typer(no_args_is_help=True, help="The model zoo.")
app.add_typer(zoo_app, name="zoo")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


_DATA_HELP = "digits, fashion-mnist[:DIR] or imagefolder:DIR."


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fmt(x, unit="", digits=2) -> str:
    return "—" if x is None else f"{x:.{digits}f}{unit}"


@zoo_app.command("list")
def zoo_list(
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    count: bool = typer.Option(False, "--count", help="Also count params and MACs (slower)."),
) -> None:
    """List the zoo with the papers' numbers (and edgekit's counts with --count)."""
    from .models import zoo_rows

    rows = zoo_rows(count=count)
    if json_out:
        return _print_json(rows)
    table = Table(title="edgekit zoo (ImageNet-1K numbers from the papers)")
    table.add_column("model", no_wrap=True)
    for col in ("input", "params", "GMACs", "top-1", "latency"):
        table.add_column(f"{col}\n(paper)", no_wrap=True)
    if count:
        table.add_column("params\n(edgekit)", no_wrap=True)
        table.add_column("GMACs\n(edgekit)", no_wrap=True)
    for r in rows:
        p = r["paper"]
        cells = [r["name"], str(r["input_size"]), _fmt(p["params_m"], "M", 1), _fmt(p["gmacs"]),
                 _fmt(p["top1"], "%", 1), _fmt(p["latency_ms"], " ms")]
        if count:
            cells += [_fmt(r["params_m"], "M"), _fmt(r["gmacs"])]
        table.add_row(*cells)
    out.print(table)


@zoo_app.command("info")
def zoo_info(
    name: str,
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Count MACs at this input size."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A model card: input, preprocessing, params and MACs counted by edgekit beside the paper's."""
    from .models import model_info

    info = model_info(name, input_size=input_size)
    if json_out:
        return _print_json(info)
    p = info["paper"]
    out.print(f"[bold]{info['name']}[/bold] ({info['family']})")
    out.print(f"  input       1x3x{info['input_size']}x{info['input_size']} RGB")
    out.print(f"  preprocess  x/255, mean {tuple(info['mean'])}, std {tuple(info['std'])}")
    out.print(f"  classes     {info['num_classes']}")
    out.print(f"  params      {info['params_m']:.2f} M counted by edgekit | paper {_fmt(p['params_m'], ' M', 1)}")
    out.print(f"  MACs        {info['gmacs']:.3f} G counted at {info['input_size']} | paper {_fmt(p['gmacs'], ' G')}")
    out.print(f"  top-1       paper {_fmt(p['top1'], ' %', 1)} (ImageNet-1K)")
    where = f" ({p['latency_where']})" if p.get("latency_where") else ""
    out.print(f"  latency     paper {_fmt(p['latency_ms'], ' ms')}{where}")
    if p.get("source"):
        out.print(f"  source      {p['source']}")
    if info.get("notes"):
        out.print(f"  notes       {info['notes']}")


@app.command("compile")
def compile_cmd(
    model: str = typer.Argument(..., help="Zoo name, path/to/file.py:Class, package.module:factory or an edgekit checkpoint."),
    target: str = typer.Option(..., "--target", "-t", help="coreml, tflite, executorch or onnx."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="State dict file (bare or under 'model'/'state_dict')."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Square input size (default: the model card's)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier width (default: the model card's)."),
    out_dir: Path = typer.Option(Path("out"), "--out", help="Directory for the artifact and its manifest."),
    delegate: Optional[str] = typer.Option(None, "--delegate", help="ExecuTorch: xnnpack (default), coreml or none."),
    precision: str = typer.Option("fp16", "--precision", help="Core ML compute precision: fp16 or fp32."),
    min_target: str = typer.Option("iOS16", "--min-target", help="Core ML minimum deployment target, e.g. iOS16, macOS13."),
    image_input: bool = typer.Option(False, "--image-input", help="Core ML: take an RGB image, preprocessing baked in."),
    quantize: Optional[str] = typer.Option(None, "--quantize", "-q", help="executorch: int8, int8-dynamic; tflite: int8, "
                                           "int8-dynamic, fp16; coreml: w8, w4, palette4, w8a8; onnx: int8, int8-dynamic."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration / validation data: " + _DATA_HELP),
    calib_size: int = typer.Option(256, "--calib-size", help="Calibration images (at least 32)."),
    float_layer: Optional[list[str]] = typer.Option(None, "--float-layer", help="Module path to keep float (repeatable)."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Most accuracy points to lose; keeps the most harmful layers float."),
    val_samples: int = typer.Option(1000, "--val-samples", help="Validation images for the accuracy check."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the artifact against PyTorch (default on)."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Compile MODEL for a target (optionally quantized), verify it against PyTorch and write a manifest beside it."""
    from .compile import compile as compile_model

    with err.status(f"compiling {model} for {target}…", spinner="dots") if not json_out else _null():
        result = compile_model(
            model, target, weights=weights, input_size=input_size, num_classes=num_classes, out=out_dir,
            delegate=delegate, precision=precision, min_deployment_target=min_target, image_input=image_input,
            quantize=quantize, calib=calib, calib_size=calib_size, float_layers=tuple(float_layer or ()),
            max_drop=max_drop, val_samples=val_samples, verify=verify,
        )
    m = result.manifest
    if json_out:
        return _print_json({"artifact": str(result.artifact), "manifest_path": str(result.manifest_path), **m})
    v = m["verification"]
    out.print(f"[green]wrote[/green] {result.artifact} ({m['bytes'] / 1e6:.2f} MB, sha256 {m['sha256'][:12]}…) "
              f"in {m['compile_seconds']:.1f} s")
    if "delegation" in m:
        d = m["delegation"]
        left = ", ".join(d["not_delegated_ops"]) or "none"
        out.print(f"  delegation  {m['delegate']}: {d['coverage']:.1%} of nodes; not delegated: {left}")
    if "quantization" in m:
        q = m["quantization"]
        a = q["accuracy"]
        line = f"  quantized   {q['scheme']}"
        if q.get("calibration", {}).get("samples"):
            line += f", calibrated on {q['calibration']['samples']} images of {q['calibration']['data']}"
        out.print(line)
        if a["status"] == "measured":
            out.print(f"  accuracy    {a['float']:.2%} float -> {a['quantized']:.2%} ({a['drop_points']:+.2f} points drop), "
                      f"top-1 agreement {a['agreement']:.2%} on {a['samples']} val images ({a['measured_with']})")
        else:
            out.print(f"  accuracy    not measured: {a['reason']}")
        if q.get("float_layers"):
            out.print(f"  kept float  {', '.join(q['float_layers'])}")
    if v["status"] == "passed":
        out.print(f"  verified    {v['summary']}")
    else:
        out.print(f"  verify      {v['status']}: {v.get('reason', v.get('summary', ''))}")
    out.print(f"  manifest    {result.manifest_path}")


@app.command("verify")
def verify_cmd(
    artifact: Path = typer.Argument(..., help="A compiled artifact with its manifest beside it."),
    model: Optional[str] = typer.Option(None, "--model", help="The PyTorch model it came from (default: the manifest's)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights for --model."),
    samples: int = typer.Option(4, "--samples", help="Number of fixed inputs."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run ARTIFACT in its own runtime on fixed inputs and compare with PyTorch; exit 2 on a breach."""
    from .verify import verify

    result = verify(artifact, model, weights=weights, samples=samples, strict=False)
    if json_out:
        _print_json(result)
    elif result["status"] == "passed":
        out.print(f"[green]passed[/green] {result['summary']}")
    elif result["status"] == "skipped":
        out.print(f"[yellow]skipped[/yellow] {result['reason']}")
    if result["status"] == "failed":
        if not json_out:
            err.print(f"error: {artifact} differs from PyTorch beyond tolerance: {result['summary']}", soft_wrap=True)
        raise typer.Exit(2)


@app.command("prune")
def prune_cmd(
    model: str = typer.Argument(..., help="Zoo name, path/to/file.py:Class or an edgekit checkpoint."),
    method: str = typer.Option(..., "--method", help="oto, magnitude or dimap."),
    ratio: float = typer.Option(..., "--ratio", help="Fraction to remove: of weights (unstructured) or channels (--structured)."),
    out_path: Path = typer.Option(..., "--out", help="Checkpoint to write (.pt)."),
    structured: bool = typer.Option(False, "--structured", help="Remove whole channel groups (real speed-ups; oto always does)."),
    data: str = typer.Option("digits", "--data", help="oto: the dataset it trains on."),
    steps: int = typer.Option(200, "--steps", help="oto: training steps."),
    optimizer: str = typer.Option("hesso", "--optimizer", help="oto: hesso (OTOv3 default) or dhspg."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="State dict to start from."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes"),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Input size the MACs are counted at."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Prune MODEL and write an edgekit checkpoint every other command takes as a model."""
    from .prune import prune

    with err.status(f"pruning {model} ({method}, {ratio:.0%})…", spinner="dots") if not json_out else _null():
        result = prune(model, method, ratio, out=out_path, structured=structured, weights=weights,
                       num_classes=num_classes, input_size=input_size, data=data, steps=steps, optimizer=optimizer)
    r = result.report
    if json_out:
        return _print_json({"checkpoint": str(result.checkpoint), **r})
    b, a = r["before"], r["after"]
    out.print(f"[green]wrote[/green] {result.checkpoint}")
    out.print(f"  params      {b['params'] / 1e6:.3f} M -> {a['params'] / 1e6:.3f} M "
              f"(non-zero {b['nonzero_params'] / 1e6:.3f} M -> {a['nonzero_params'] / 1e6:.3f} M)")
    out.print(f"  MACs        {b['macs'] / 1e9:.4f} G -> {a['macs'] / 1e9:.4f} G at {r['input_size']}")
    if "channels_removed" in r:
        out.print(f"  channels    {r['channels_removed']} of {r['channels_total']} removed in {r['groups']} groups")
    if "oto" in r:
        o = r["oto"]
        out.print(f"  oto         {o['optimizer']}: loss {o['loss_first']:.3f} -> {o['loss_last']:.3f}; val accuracy "
                  f"{o['val_accuracy_group_sparse']:.1%} group-sparse, {o['val_accuracy_subnet']:.1%} subnet")
    out.print(f"  sparsity    {r['prunable_sparsity']:.1%} of prunable weights are zero")


def _progress_bar(label: str, quiet: bool):
    """A rich progress bar over training steps, and the callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if quiet:
        return _null(), None
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                   TimeRemainingColumn(), console=err, transient=True)
    task = bar.add_task(label, total=None, loss=float("nan"))

    def advance(step: int, total: int, loss: float) -> None:
        bar.update(task, completed=step, total=total, loss=loss)

    return bar, advance


def _print_training(r: dict) -> None:
    out.print(f"[green]wrote[/green] {r['checkpoint']}")
    for h in r["history"]:
        out.print(f"  epoch {h['epoch']:>3}  loss {h['train_loss']:.4f}  val accuracy {h['val_accuracy']:.2%}  "
                  f"({h['seconds']:.0f} s)")
    before = r["val_accuracy_before"]
    if before is not None:
        out.print(f"  val accuracy {before:.2%} -> {r['val_accuracy']:.2%} on {r['data']['spec']} "
                  f"({r['data']['val']} images)")
    if "teacher_val_accuracy" in r:
        out.print(f"  teacher     {r['teacher']}: val accuracy {r['teacher_val_accuracy']:.2%}")


@app.command("train")
def train_cmd(
    model: str = typer.Argument(..., help="Zoo name, path/to/file.py:Class or an edgekit checkpoint (e.g. a pruned one)."),
    data: str = typer.Option("digits", "--data", help=_DATA_HELP),
    epochs: int = typer.Option(1, "--epochs"),
    out_path: Path = typer.Option(..., "--out", help="Checkpoint to write after every epoch (.pt)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW peak learning rate (cosine schedule, linear warm-up)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    seed: int = typer.Option(0, "--seed"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="State dict to start from."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Default: the dataset's classes for a zoo model."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Train at this square input size."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use a seeded subset of this many training images."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train or fine-tune MODEL on a dataset (AdamW, cosine schedule); pruning zeros and plans are kept."""
    from .distill import train

    bar, advance = _progress_bar(f"training {model}", json_out)
    with bar:
        result = train(model, data, out=out_path, epochs=epochs, lr=lr, batch_size=batch_size,
                       weight_decay=weight_decay, seed=seed, weights=weights, num_classes=num_classes,
                       input_size=input_size, limit=limit, resume=resume, progress=advance)
    if json_out:
        return _print_json(result.report)
    _print_training(result.report)


@app.command("distill")
def distill_cmd(
    student: str = typer.Argument(..., help="The student: usually a pruned checkpoint."),
    teacher: str = typer.Option(..., "--teacher", help="The teacher: a trained checkpoint (or zoo name + --teacher-weights)."),
    data: str = typer.Option("digits", "--data", help=_DATA_HELP),
    epochs: int = typer.Option(1, "--epochs"),
    out_path: Path = typer.Option(..., "--out", help="Checkpoint to write after every epoch (.pt)."),
    temperature: float = typer.Option(4.0, "--temperature", help="Soft-label temperature T."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the teacher's term against the labels'."),
    hard: bool = typer.Option(False, "--hard", help="DeiT hard distillation (the teacher's top-1 as the label)."),
    feature: Optional[list[str]] = typer.Option(None, "--feature", help="STUDENT_LAYER:TEACHER_LAYER to match (repeatable)."),
    lr: float = typer.Option(1e-3, "--lr"),
    batch_size: int = typer.Option(64, "--batch-size"),
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    seed: int = typer.Option(0, "--seed"),
    teacher_weights: Optional[Path] = typer.Option(None, "--teacher-weights"),
    input_size: Optional[int] = typer.Option(None, "--input-size"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use a seeded subset of this many training images."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train STUDENT with a TEACHER's outputs: soft-label KD, DeiT hard distillation, feature matching."""
    from .distill import distill, parse_features

    features = parse_features(feature)
    bar, advance = _progress_bar(f"distilling into {student}", json_out)
    with bar:
        result = distill(student, teacher, data, out=out_path, epochs=epochs, lr=lr, batch_size=batch_size,
                         weight_decay=weight_decay, seed=seed, temperature=temperature, alpha=alpha, hard=hard,
                         features=features, teacher_weights=teacher_weights, input_size=input_size, limit=limit,
                         resume=resume, progress=advance)
    if json_out:
        return _print_json(result.report)
    _print_training(result.report)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main() -> None:
    """Entry point: a user's mistake is one line on stderr and exit code 2, never a traceback."""
    try:
        rc = app(standalone_mode=False)  # click hands back typer.Exit's code instead of raising it
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except EdgekitError as e:
        err.print(f"error: {e}", soft_wrap=True, markup=False, highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; nothing half-written was left behind", markup=False)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
