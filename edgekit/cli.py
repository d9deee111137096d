"""The `edgekit` command: parsing and printing only; every command is a thin call into the package."""

from __future__ import annotations

import contextvars
import errno
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import recipe as recipes
from .compile import compile as compile_model
from .compile import scheme_help, target_names, verify
from .compile.attribution import tree_rows
from .compile.debugging import debug as debug_artifact
from .data import data_help
from .demo import bundle
from .devices import launched_rank, shutdown
from .distill import distill, parse_features, train
from .errors import EdgekitError
from .io import atomic_path, check_writable, write_json
from .latency import (
    CALIBRATION,
    LatencyDB,
    calibrate,
    kernel_model_for,
    kernel_model_summary,
    latency_of,
    predict,
    record,
)
from .latency.sweep import DEFAULT as DEFAULT_GRID
from .latency.sweep import QUICK as QUICK_GRID
from .latency.sweep import grid as sweep_grid
from .latency.sweep import import_bundle_reports
from .latency.sweep import missing as kernels_missing
from .latency.sweep import sweep as sweep_kernels
from .latency.sweep import write_bundle as write_kernel_bundle
from .models import model_info, reset_trusted_code, trust_all_code, zoo_rows
from .profile import load_report, profile
from .profile.devices import find_device
from .prune import prune
from .prune.methods import method_names
from .report import write_debug_report, write_report
from .select import prune_to_budget, select
from .specs import (
    DEFAULT_DATA,
    DEFAULT_SEED,
    CompileSpec,
    DistillSpec,
    ProfileSpec,
    PruneSpec,
    QuantizeSpec,
    TrainSpec,
    VerifySpec,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="edgekit: vision models to phones, verified.")
zoo_app = typer.Typer(no_args_is_help=True, help="The model zoo.")
app.add_typer(zoo_app, name="zoo")
out = Console(soft_wrap=True, highlight=False)  # the highlighter is quadratic on long strings (86 s for 100 KB)
err = Console(stderr=True, soft_wrap=True)


_TARGETS_HELP = ", ".join(target_names()) + "."
_DATA_HELP = data_help() + "."
_DB_HELP = "Latency database (SQLite); default $EDGEKIT_DB or ~/.cache/edgekit/latency.sqlite."


_TRUST_CODE = typer.Option(
    False,
    "--trust-code",
    help="Let model references read from files (a checkpoint's base model, a manifest's model) run the Python "
    "code they name. A model you type as path/to/file.py:Class runs that file without it.",
)


def _trust(trust_code: bool) -> None:
    if trust_code:
        trust_all_code()


def _text(value) -> str:
    """A report's or database's string as data, never as rich markup (`[/bold]` in a device name is text)."""
    return escape("" if value is None else str(value))


def _print_json(data) -> None:
    if launched_rank() == 0:  # under torchrun, one document from rank 0
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fmt(x, unit="", digits=2) -> str:
    return "—" if x is None else f"{x:.{digits}f}{unit}"


@zoo_app.command("list")
def zoo_list(
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    count: bool = typer.Option(False, "--count", help="Also count params and MACs (slower)."),
) -> None:
    """List the zoo with the papers' numbers (and edgekit's counts with --count)."""
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
        cells = [
            r["name"],
            str(r["input_size"]),
            _fmt(p["params_m"], "M", 1),
            _fmt(p["gmacs"]),
            _fmt(p["top1"], "%", 1),
            _fmt(p["latency_ms"], " ms"),
        ]
        if count:
            cells += [_fmt(r["params_m"], "M"), _fmt(r["gmacs"])]
        table.add_row(*cells)
    out.print(table)


@zoo_app.command("info")
def zoo_info(
    name: str,
    input_size: int | None = typer.Option(None, "--input-size", help="Count MACs at this input size."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """A model card: input, preprocessing, params and MACs counted by edgekit beside the paper's."""
    _trust(trust_code)
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
    model: str = typer.Argument(
        ..., help="Zoo name, path/to/file.py:Class, package.module:factory or an edgekit checkpoint."
    ),
    target: str = typer.Option(..., "--target", "-t", help=_TARGETS_HELP),
    weights: Path | None = typer.Option(
        None, "--weights", help="State dict file (bare or under 'model'/'state_dict')."
    ),
    input_size: int | None = typer.Option(None, "--input-size", help="Square input size (default: the model card's)."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classifier width (default: the model card's)."),
    out_dir: Path = typer.Option(Path("out"), "--out", help="Directory for the artifact and its manifest."),
    delegate: str | None = typer.Option(
        CompileSpec.default("delegate"), "--delegate", help=CompileSpec.help("delegate")
    ),
    precision: str = typer.Option(CompileSpec.default("precision"), "--precision", help=CompileSpec.help("precision")),
    min_target: str = typer.Option(
        CompileSpec.default("min_target"), "--min-target", help=CompileSpec.help("min_target")
    ),
    image_input: bool = typer.Option(
        CompileSpec.default("image_input"), "--image-input", help=CompileSpec.help("image_input")
    ),
    quantize: str | None = typer.Option(None, "--quantize", "-q", help=scheme_help()),
    calib: str | None = typer.Option(None, "--calib", help="Calibration / validation data: " + _DATA_HELP),
    calib_size: int = typer.Option(
        QuantizeSpec.default("calib_size"), "--calib-size", help=QuantizeSpec.help("calib_size")
    ),
    float_layer: list[str] | None = typer.Option(None, "--float-layer", help="Module path to keep float (repeatable)."),
    max_drop: float | None = typer.Option(
        QuantizeSpec.default("max_drop"), "--max-drop", help=QuantizeSpec.help("max_drop")
    ),
    val_samples: int = typer.Option(
        QuantizeSpec.default("val_samples"), "--val-samples", help=QuantizeSpec.help("val_samples")
    ),
    verify: bool = typer.Option(
        VerifySpec.default("enabled"), "--verify/--no-verify", help=VerifySpec.help("enabled") + " (default on)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Compile MODEL for a target (optionally quantized), verify it against PyTorch and write a manifest beside it."""
    _trust(trust_code)
    with err.status(f"compiling {model} for {target}…", spinner="dots") if not json_out else _null():
        result = compile_model(
            model,
            target,
            weights=weights,
            input_size=input_size,
            num_classes=num_classes,
            out=out_dir,
            delegate=delegate,
            precision=precision,
            min_deployment_target=min_target,
            image_input=image_input,
            quantize=quantize,
            calib=calib,
            calib_size=calib_size,
            float_layers=tuple(float_layer or ()),
            max_drop=max_drop,
            val_samples=val_samples,
            verify=verify,
        )
    m = result.manifest
    if json_out:
        return _print_json({"artifact": str(result.artifact), "manifest_path": str(result.manifest_path), **m})
    v = m["verification"]
    out.print(
        f"[green]wrote[/green] {result.artifact} ({m['bytes'] / 1e6:.2f} MB, sha256 {m['sha256'][:12]}…) "
        f"in {m['compile_seconds']:.1f} s"
    )
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
            out.print(
                f"  accuracy    {a['float']:.2%} float -> {a['quantized']:.2%} ({a['drop_points']:+.2f} points drop), "
                f"top-1 agreement {a['agreement']:.2%} on {a['samples']} val images ({a['measured_with']})"
            )
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
    model: str | None = typer.Option(None, "--model", help="The PyTorch model it came from (default: the manifest's)."),
    weights: Path | None = typer.Option(None, "--weights", help="Weights for --model."),
    samples: int = typer.Option(VerifySpec.default("samples"), "--samples", help=VerifySpec.help("samples")),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Run ARTIFACT in its own runtime on fixed inputs and compare with PyTorch; exit 2 on a breach."""
    _trust(trust_code)
    result = verify(artifact, model, weights=weights, samples=samples, strict=False)
    if json_out:
        _print_json(result)
    elif result["status"] == "passed":
        out.print(f"[green]passed[/green] {result['summary']}")
    elif result["status"] == "skipped":
        out.print(f"[yellow]skipped[/yellow] {result['reason']}")
    if result["status"] == "failed":
        if not json_out:
            where = f"; {result['first_diverging']}" if result.get("first_diverging") else ""
            err.print(
                f"error: {artifact} differs from PyTorch beyond tolerance: {result['summary']}{where}", soft_wrap=True
            )
        raise typer.Exit(2)


@app.command("debug")
def debug_cmd(
    artifact: Path = typer.Argument(..., help="A compiled artifact with its manifest beside it."),
    model: str | None = typer.Option(None, "--model", help="The PyTorch model it came from (default: the manifest's)."),
    weights: Path | None = typer.Option(None, "--weights", help="Weights for --model."),
    samples: int = typer.Option(2, "--samples", help="Inputs to compare on (1 to 64)."),
    html_out: Path | None = typer.Option(None, "--html", help="Also write the module tree with error bars here."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Which module of the model ARTIFACT stops agreeing with: every module's output compared with PyTorch's."""
    _trust(trust_code)
    if html_out is not None:
        check_writable(html_out)
    result = debug_artifact(artifact, model, weights=weights, samples=samples)
    if html_out is not None:
        write_debug_report(result, html_out)
    if json_out:
        return _print_json(result)
    first = result["first_breach"]
    out.print(
        f"{_text(result['target'])}: {result['modules_compared']} of {result['modules_in_model']} modules compared "
        f"on {result['samples']} input(s)"
    )
    if first:
        out.print(
            f"  [red]first beyond tolerance[/red]  {_text(first['module'])} (cosine {first['cosine']:.5f}, "
            f"max abs error {first['max_abs']:.3g})"
        )
    else:
        out.print("  [green]every compared module is within tolerance[/green]")
    out.print(f"  {'module':<48} {'rel error':>10} {'cosine':>9} {'SNR dB':>7}")
    rows = result["rows"]
    shown = rows if len(rows) <= 40 else [r for r in rows if r["breach"]][:20] + rows[-5:]
    for r in shown:
        flag = " [red]<[/red]" if r["breach"] else ""
        out.print(f"  {_text(r['module']):<48} {r['rel_error']:>10.2e} {r['cosine']:>9.5f} {r['snr_db']:>7.1f}{flag}")
    if result["quantized"] and result["worst_added"]:
        out.print("  error added (quantized), worst first:")
        for r in result["worst_added"]:
            out.print(f"    {_text(r['module']):<46} +{r['added']:.4f}")
        if result["float_layer_args"]:
            out.print(f"  keep them float: {' '.join(result['float_layer_args'])}")
    if html_out is not None:
        out.print(f"  html        {html_out}")


@app.command("prune")
def prune_cmd(
    model: str = typer.Argument(..., help="Zoo name, path/to/file.py:Class or an edgekit checkpoint."),
    method: str | None = typer.Option(
        None,
        "--method",
        help=f"A registered pruning method: {', '.join(method_names())} (--budget-ms: magnitude by default).",
    ),
    ratio: float | None = typer.Option(
        None, "--ratio", help="Fraction to remove: of weights (unstructured) or channels (--structured)."
    ),
    out_path: Path = typer.Option(..., "--out", help="Checkpoint to write (.pt)."),
    structured: bool = typer.Option(PruneSpec.default("structured"), "--structured", help=PruneSpec.help("structured")),
    data: str = typer.Option(DEFAULT_DATA, "--data", help="oto: the dataset it trains on."),
    steps: int = typer.Option(PruneSpec.default("steps"), "--steps", help=PruneSpec.help("steps")),
    optimizer: str = typer.Option(PruneSpec.default("optimizer"), "--optimizer", help=PruneSpec.help("optimizer")),
    round_to: int = typer.Option(PruneSpec.default("round_to"), "--round-to", help=PruneSpec.help("round_to")),
    train_device: str = typer.Option(
        PruneSpec.default("device"), "--train-device", help="oto: " + TrainSpec.help("device")
    ),
    precision: str = typer.Option(
        PruneSpec.default("precision"), "--precision", help="oto: " + TrainSpec.help("precision")
    ),
    workers: int | None = typer.Option(
        PruneSpec.default("workers"), "--workers", help="oto: " + TrainSpec.help("workers")
    ),
    weights: Path | None = typer.Option(None, "--weights", help="State dict to start from."),
    num_classes: int | None = typer.Option(None, "--num-classes"),
    input_size: int | None = typer.Option(None, "--input-size", help="Input size the MACs are counted at."),
    budget_ms: float | None = typer.Option(
        None, "--budget-ms", help="Latency budget: per-stage ratios chosen to fit it."
    ),
    target: str | None = typer.Option(None, "--target", help="With --budget-ms: the target the budget is for."),
    device: str = typer.Option("host", "--device", help="With --budget-ms: the device the budget is for."),
    threads: int | None = typer.Option(None, "--threads", help="With --budget-ms: runtime threads."),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Prune MODEL and write an edgekit checkpoint every other command takes as a model.

    With --budget-ms and --target: structured pruning whose per-stage ratios are chosen so the predicted
    latency fits the budget, confirmed by compiling and measuring.
    """
    _trust(trust_code)
    if budget_ms is not None:
        return _prune_budget(
            model, method or "magnitude", budget_ms, target, device, threads, out_path, input_size, ratio, db, json_out
        )
    if method is None or ratio is None:
        raise EdgekitError("give --method and --ratio (or --budget-ms MS --target T for latency-aware pruning)")

    with err.status(f"pruning {model} ({method}, {ratio:.0%})…", spinner="dots") if not json_out else _null():
        result = prune(
            model,
            method,
            ratio,
            out=out_path,
            structured=structured,
            weights=weights,
            num_classes=num_classes,
            input_size=input_size,
            data=data,
            steps=steps,
            optimizer=optimizer,
            round_to=round_to,
            device=train_device,
            precision=precision,
            workers=workers,
        )
    r = result.report
    if json_out:
        return _print_json({"checkpoint": str(result.checkpoint), **r})
    b, a = r["before"], r["after"]
    out.print(f"[green]wrote[/green] {result.checkpoint}")
    out.print(
        f"  params      {b['params'] / 1e6:.3f} M -> {a['params'] / 1e6:.3f} M "
        f"(non-zero {b['nonzero_params'] / 1e6:.3f} M -> {a['nonzero_params'] / 1e6:.3f} M)"
    )
    out.print(f"  MACs        {b['macs'] / 1e9:.4f} G -> {a['macs'] / 1e9:.4f} G at {r['input_size']}")
    if "channels_removed" in r:
        out.print(f"  channels    {r['channels_removed']} of {r['channels_total']} removed in {r['groups']} groups")
    for line in r.get("left_out", [])[:5]:
        out.print(f"  left out    {_text(line)}")
    if len(r.get("left_out", [])) > 5:
        out.print(f"  left out    and {len(r['left_out']) - 5} more groups (--json lists them)")
    if "oto" in r:
        o = r["oto"]
        out.print(
            f"  oto         {o['optimizer']}: loss {o['loss_first']:.3f} -> {o['loss_last']:.3f}; val accuracy "
            f"{o['val_accuracy_group_sparse']:.1%} group-sparse, {o['val_accuracy_subnet']:.1%} subnet"
        )
    out.print(
        f"  sparsity    {r['prunable_sparsity']:.1%} of prunable weights are zero, "
        f"{r['sparsity_all_weights']:.1%} of all weights"
    )
    if r.get("excluded_weights") and r["prunable_sparsity"] > 0:
        kept = r["excluded_weights"]
        more = f" and {len(kept) - 3} more" if len(kept) > 3 else ""
        out.print(f"  kept        {', '.join(_text(k) for k in kept[:3])}{more} ({_text(r['excluded_rule'])})")


def _prune_budget(model, method, budget_ms, target, device, threads, out_path, input_size, ratio, db, json_out):
    if target is None:
        raise EdgekitError("--budget-ms needs --target (the runtime the budget is measured on)")
    if ratio is not None:
        raise EdgekitError("give --ratio or --budget-ms, not both: the budget chooses the ratios")
    n = _threads_for(target, device, threads)
    with LatencyDB(db) as database, err.status("pruning to budget…", spinner="dots") as status:
        r = prune_to_budget(
            model,
            target,
            device,
            budget_ms,
            threads=n,
            db=database,
            out=out_path,
            method=method,
            input_size=input_size,
            progress=lambda m: status.update(m),
        )
    if json_out:
        return _print_json(r)
    out.print(f"[green]wrote[/green] {r['checkpoint']}")
    out.print(f"  stage ratios {', '.join(f'{x:.0%}' for x in r['stage_ratios'])} (stem side to head side)")
    out.print(
        f"  MACs        {r['before']['macs'] / 1e9:.4f} G -> {r['after']['macs'] / 1e9:.4f} G at {r['input_size']}"
    )
    out.print(
        f"  latency     {r['predicted_ms_unpruned']:.2f} ms -> {r['predicted_ms']:.2f} ms predicted, "
        f"{_fmt(r['measured_ms'])} ms measured on {target}/{device} (budget {budget_ms:g} ms)"
    )
    if r["within_budget"] is False:
        err.print(
            f"error: measured {r['measured_ms']:.2f} ms is over the {budget_ms:g} ms budget after "
            f"{len(r['attempts'])} attempts; the checkpoint is the closest found",
            markup=False,
        )
        raise typer.Exit(2)


def _progress_bar(label: str, quiet: bool):
    """A rich progress bar over training steps, and the callback that advances it (rank 0's only)."""
    if quiet or launched_rank() > 0:
        return _null(), None
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[rate]:.0f} img/s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(label, total=None, loss=float("nan"), rate=0.0)

    def advance(step: int, total: int, loss: float, rate: float = 0.0) -> None:
        bar.update(task, completed=step, total=total, loss=loss, rate=rate)

    return bar, advance


_DEVICE = typer.Option(TrainSpec.default("device"), "--device", help=TrainSpec.help("device"))
_PRECISION = typer.Option(TrainSpec.default("precision"), "--precision", help=TrainSpec.help("precision"))
_WORKERS = typer.Option(TrainSpec.default("workers"), "--workers", help=TrainSpec.help("workers"))
_AUGMENT = typer.Option(TrainSpec.default("augment"), "--augment", help=TrainSpec.help("augment"))
_ACCUMULATE = typer.Option(TrainSpec.default("accumulate"), "--accumulate", help=TrainSpec.help("accumulate"))
_CLIP_GRAD = typer.Option(TrainSpec.default("clip_grad"), "--clip-grad", help=TrainSpec.help("clip_grad"))
_EMA = typer.Option(TrainSpec.default("ema"), "--ema", help=TrainSpec.help("ema"))


def _print_training(r: dict) -> None:
    out.print(f"[green]wrote[/green] {r['checkpoint']}")
    for h in r["history"]:
        out.print(
            f"  epoch {h['epoch']:>3}  loss {h['train_loss']:.4f}  val accuracy {h['val_accuracy']:.2%}  "
            + (f"({h['seconds']:.0f} s, {h['images_per_s']:.0f} img/s)" if "seconds" in h else "(an earlier run)")
        )
    before = r["val_accuracy_before"]
    if before is not None:
        out.print(
            f"  val accuracy {before:.2%} -> {r['val_accuracy']:.2%} on {r['data']['spec']} ({r['data']['val']} images)"
        )
    if "teacher_val_accuracy" in r:
        out.print(f"  teacher     {r['teacher']}: val accuracy {r['teacher_val_accuracy']:.2%}")


@app.command("train")
def train_cmd(
    model: str = typer.Argument(
        ..., help="Zoo name, path/to/file.py:Class or an edgekit checkpoint (e.g. a pruned one)."
    ),
    data: str = typer.Option(DEFAULT_DATA, "--data", help=data_help()),
    epochs: int = typer.Option(TrainSpec.default("epochs"), "--epochs", help=TrainSpec.help("epochs")),
    out_path: Path = typer.Option(..., "--out", help="Checkpoint to write after every epoch (.pt)."),
    lr: float = typer.Option(TrainSpec.default("lr"), "--lr", help=TrainSpec.help("lr")),
    batch_size: int = typer.Option(TrainSpec.default("batch_size"), "--batch-size", help=TrainSpec.help("batch_size")),
    weight_decay: float = typer.Option(
        TrainSpec.default("weight_decay"), "--weight-decay", help=TrainSpec.help("weight_decay")
    ),
    seed: int = typer.Option(DEFAULT_SEED, "--seed"),
    weights: Path | None = typer.Option(None, "--weights", help="State dict to start from."),
    num_classes: int | None = typer.Option(
        None, "--num-classes", help="Default: the dataset's classes for a zoo model."
    ),
    input_size: int | None = typer.Option(None, "--input-size", help="Train at this square input size."),
    limit: int | None = typer.Option(TrainSpec.default("limit"), "--limit", help=TrainSpec.help("limit")),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out."),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    workers: int | None = _WORKERS,
    augment: str = _AUGMENT,
    accumulate: int = _ACCUMULATE,
    clip_grad: float | None = _CLIP_GRAD,
    ema: float | None = _EMA,
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Train or fine-tune MODEL on a dataset (AdamW, cosine schedule); pruning zeros and plans are kept."""
    _trust(trust_code)
    bar, advance = _progress_bar(f"training {model}", json_out)
    with bar:
        result = train(
            model,
            data,
            out=out_path,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            seed=seed,
            weights=weights,
            num_classes=num_classes,
            input_size=input_size,
            limit=limit,
            resume=resume,
            progress=advance,
            device=device,
            precision=precision,
            workers=workers,
            augment=augment,
            accumulate=accumulate,
            clip_grad=clip_grad,
            ema=ema,
        )
    if json_out:
        return _print_json(result.report)
    _print_training(result.report)


@app.command("distill")
def distill_cmd(
    student: str = typer.Argument(..., help="The student: usually a pruned checkpoint."),
    teacher: str = typer.Option(..., "--teacher", help=DistillSpec.help("teacher")),
    data: str = typer.Option(DEFAULT_DATA, "--data", help=data_help()),
    epochs: int = typer.Option(DistillSpec.default("epochs"), "--epochs", help=DistillSpec.help("epochs")),
    out_path: Path = typer.Option(..., "--out", help="Checkpoint to write after every epoch (.pt)."),
    temperature: float = typer.Option(
        DistillSpec.default("temperature"), "--temperature", help=DistillSpec.help("temperature")
    ),
    alpha: float = typer.Option(DistillSpec.default("alpha"), "--alpha", help=DistillSpec.help("alpha")),
    hard: bool = typer.Option(DistillSpec.default("hard"), "--hard", help=DistillSpec.help("hard")),
    feature: list[str] | None = typer.Option(None, "--feature", help=DistillSpec.help("features") + " Repeatable."),
    lr: float = typer.Option(DistillSpec.default("lr"), "--lr", help=DistillSpec.help("lr")),
    batch_size: int = typer.Option(
        DistillSpec.default("batch_size"), "--batch-size", help=DistillSpec.help("batch_size")
    ),
    weight_decay: float = typer.Option(
        DistillSpec.default("weight_decay"), "--weight-decay", help=DistillSpec.help("weight_decay")
    ),
    seed: int = typer.Option(DEFAULT_SEED, "--seed"),
    teacher_weights: Path | None = typer.Option(
        DistillSpec.default("teacher_weights"), "--teacher-weights", help=DistillSpec.help("teacher_weights")
    ),
    input_size: int | None = typer.Option(None, "--input-size"),
    limit: int | None = typer.Option(DistillSpec.default("limit"), "--limit", help=DistillSpec.help("limit")),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out."),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    workers: int | None = _WORKERS,
    augment: str = _AUGMENT,
    accumulate: int = _ACCUMULATE,
    clip_grad: float | None = _CLIP_GRAD,
    ema: float | None = _EMA,
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Train STUDENT with a TEACHER's outputs: soft-label KD, DeiT hard distillation, feature matching."""
    _trust(trust_code)
    features = parse_features(feature)
    bar, advance = _progress_bar(f"distilling into {student}", json_out)
    with bar:
        result = distill(
            student,
            teacher,
            data,
            out=out_path,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            seed=seed,
            temperature=temperature,
            alpha=alpha,
            hard=hard,
            features=features,
            teacher_weights=teacher_weights,
            input_size=input_size,
            limit=limit,
            resume=resume,
            progress=advance,
            device=device,
            precision=precision,
            workers=workers,
            augment=augment,
            accumulate=accumulate,
            clip_grad=clip_grad,
            ema=ema,
        )
    if json_out:
        return _print_json(result.report)
    _print_training(result.report)


def _print_report(r: dict) -> None:
    a, d = r["artifact"], r["device"]
    out.print(
        f"[bold]{_text(a.get('name') or a['sha256'][:12])}[/bold] on {_text(d['name'])} ({_text(d.get('model'))}), "
        f"{_text(r['runtime']['name'])} {_text(r['runtime'].get('version'))}, {r['threads']} threads"
    )
    if r["samples_ms"]:
        out.print(
            f"  latency     median {r['median_ms']:.3f} ms | min {r['min_ms']:.3f} | p90 {r['p90_ms']:.3f} | "
            f"IQR {r['iqr_ms']:.3f}  ({r['runs']} runs after {r['warmup']} warm-up)"
        )
    else:
        out.print(
            f"  latency     mean {_fmt(r.get('mean_ms'), ' ms', 3)} | median {_fmt(r.get('median_ms'), ' ms', 3)}"
            f"  ({r['runs']} runs; the tool gave a summary only)"
        )
    out.print(
        f"  load        {_fmt(r.get('load_ms'), ' ms', 1)}   peak memory {_fmt(r.get('peak_memory_mb'), ' MB', 1)}"
    )
    for note in r.get("notes", []):
        out.print(f"  [yellow]note[/yellow]        {_text(note)}")
    if r.get("ops"):

        def module(path: str | None) -> str:  # None: the runtime's node named no module; "": the model's own forward
            return "—" if path is None else _text(path) or "(model)"

        scoped = any(o.get("module") is not None for o in r["ops"])
        table = Table(title="per op (time per inference)")
        for col in ("op", "module", "count", "ms", "share") if scoped else ("op", "count", "ms", "share"):
            table.add_column(col, justify="left" if col in ("op", "module") else "right")
        for o in r["ops"][:15]:
            where = [module(o.get("module"))] if scoped else []
            table.add_row(_text(o["op"]), *where, str(o.get("count", "")), f"{o['ms']:.3f}", f"{o.get('share', 0):.1%}")
        out.print(table)
        if r.get("modules"):
            attributed = r.get("attributed")
            table = Table(
                title="per module (time per inference, 3 levels deep)"
                + (f"; {attributed:.1%} of op time has a module" if attributed is not None else "")
            )
            for col in ("module", "ms", "share"):
                table.add_column(col, justify="left" if col == "module" else "right")
            for depth, n in tree_rows(r["modules"], max_depth=3):
                table.add_row("  " * depth + module(n["module"]), f"{n['ms']:.3f}", f"{n.get('share', 0):.1%}")
            out.print(table)


@app.command("profile")
def profile_cmd(
    artifact: str = typer.Argument(..., help="A compiled artifact (manifest beside it), or `import` to read a report."),
    report_path: Path | None = typer.Argument(None, help="With `import`: the REPORT.json a demo app wrote."),
    runs: int = typer.Option(ProfileSpec.default("runs"), "--runs", help=ProfileSpec.help("runs")),
    warmup: int = typer.Option(ProfileSpec.default("warmup"), "--warmup", help=ProfileSpec.help("warmup")),
    threads: int | None = typer.Option(ProfileSpec.default("threads"), "--threads", help=ProfileSpec.help("threads")),
    device: str = typer.Option(ProfileSpec.default("device"), "--device", help=ProfileSpec.help("device")),
    per_op: bool = typer.Option(ProfileSpec.default("per_op"), "--per-op", help=ProfileSpec.help("per_op")),
    binary: Path | None = typer.Option(None, "--binary", help="adb: your executor_runner / benchmark_model build."),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
    no_db: bool = typer.Option(False, "--no-db", help="Do not record the report in the latency database."),
    save: Path | None = typer.Option(None, "--save", help="Also write the report JSON here."),
    json_out: bool = typer.Option(False, "--json", help="Print the report JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Measure ARTIFACT's latency in its runtime (or `profile import REPORT.json`); record it in the database."""
    _trust(trust_code)
    if artifact == "import":
        if report_path is None:
            raise EdgekitError("`edgekit profile import` needs the REPORT.json a demo app wrote")
        report = load_report(report_path)
    else:
        if report_path is not None:
            raise EdgekitError(f"unexpected argument '{report_path}'; give one artifact (or `import REPORT.json`)")
        with err.status(f"profiling {artifact}…", spinner="dots") if not json_out else _null():
            report = profile(
                artifact, runs=runs, warmup=warmup, threads=threads, device=device, per_op=per_op, binary=binary
            )
    if save:
        write_json(save, report)
    # the measurement first (stdout, --save), the database after: a damaged database loses no measurement
    if json_out:
        _print_json(report)
    else:
        _print_report(report)
    if not no_db:
        with LatencyDB(db) as database:
            row_id = record(report, database)
        if not json_out:
            out.print(f"  recorded    report {row_id} in {database.path}")


latency_app = typer.Typer(no_args_is_help=True, help="The latency database and predictor.")
app.add_typer(latency_app, name="latency")


@latency_app.command("list")
def latency_list(
    target: str | None = typer.Option(None, "--target"),
    device: str | None = typer.Option(None, "--device"),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every recorded report: artifact, target, device, threads, latency."""
    with LatencyDB(db) as database:
        rows = database.rows(target, device)
    if json_out:
        return _print_json([{k: v for k, v in r.items() if k != "features"} for r in rows])
    table = Table(title=f"{len(rows)} latency reports in {database.path}")
    for col in ("id", "artifact", "target", "device", "threads", "quant", "ms", "runs"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(
            str(r["id"]),
            f"{_text(r['artifact_name'])} {r['artifact_sha256'][:8]}",
            _text(r["target"]),
            _text(r["device"]),
            str(r["threads"]),
            _text(r["quantization"] or "float"),
            _fmt(latency_of(r), "", 3),
            str(r["runs"]),
        )
    out.print(table)


@latency_app.command("export")
def latency_export(
    out_path: Path | None = typer.Argument(None, help="File to write (default: stdout)."),
    fmt: str = typer.Option("json", "--format", help="json (the full reports) or csv (one row each)."),
    target: str | None = typer.Option(None, "--target"),
    device: str | None = typer.Option(None, "--device"),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Export the database's reports as JSON (the report schema) or CSV."""
    with LatencyDB(db) as database:
        text = database.export(fmt, target=target, device=device)
    if out_path is None:
        sys.stdout.write(text)
        return
    with atomic_path(out_path) as tmp:
        tmp.write_text(text)
    err.print(f"wrote {out_path}")


def _threads_for(target: str, device: str, threads: int | None) -> int:
    return find_device(target, device).threads_for(threads)


@latency_app.command("calibrate")
def latency_calibrate(
    target: str = typer.Option(..., "--target"),
    device: str = typer.Option("host", "--device"),
    threads: int | None = typer.Option(None, "--threads"),
    input_size: int = typer.Option(224, "--input-size"),
    quantization: str | None = typer.Option(None, "--quantize", help="Calibrate for artifacts of this scheme."),
    kernels: bool = typer.Option(
        False, "--kernels", help="Measure the kernel sweep (kernels alone over a grid of shapes) for the kernel model."
    ),
    quick: bool = typer.Option(False, "--quick", help="With --kernels: a handful of kernels at tiny sizes."),
    bundle_dir: Path | None = typer.Option(
        None,
        "--bundle",
        help="With --kernels on a phone: where the sweep's artifacts and manifest go "
        "(default kernel-sweep-TARGET-DEVICE); with --reports, the bundle they were measured from.",
    ),
    reports: Path | None = typer.Option(
        None, "--reports", help="With --kernels --bundle: import the phone's per-op reports of the bundle (a folder)."
    ),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Measure edgekit's calibration set on TARGET/DEVICE and fit the predictor (a few minutes); with --kernels,
    measure the kernel sweep and fit the kernel-level model (on a phone: list what is missing and write the sweep
    as a bundle of artifacts the demo apps or adb run; --reports imports what they measured)."""
    n = _threads_for(target, device, threads)
    if quick and not kernels:
        raise EdgekitError("--quick goes with --kernels (the quick kernel grid)")
    if (bundle_dir or reports) and not kernels:
        raise EdgekitError("--bundle and --reports go with --kernels")
    if kernels:
        if quantization is not None:
            raise EdgekitError("the kernel sweep measures float kernels; leave out --quantize with --kernels")
        dev = find_device(target, device)
        grid_name = QUICK_GRID if quick else DEFAULT_GRID
        if reports is not None:
            if bundle_dir is None:
                raise EdgekitError("--reports needs --bundle DIR, the bundle the reports were measured from")
            with LatencyDB(db) as database:
                stored = import_bundle_reports(bundle_dir, reports, database)
            if json_out:
                return _print_json({"imported": stored})
            out.print(f"[green]imported[/green] {sum(stored.values())} kernel samples from {len(stored)} reports")
            return None
        if dev.profile.via != "host":
            where = bundle_dir or Path(f"kernel-sweep-{target}-{dev.device}")
            with LatencyDB(db) as database:
                todo = kernels_missing(database, target, dev.device, n, grid_name)
            total = len(sweep_grid(grid_name))
            counts: dict[str, int] = {}
            for spec in todo:
                counts[spec.kind] = counts.get(spec.kind, 0) + 1
            manifest = None
            if todo:
                with err.status("compiling the kernel bundle…", spinner="dots") as status:
                    manifest = write_kernel_bundle(
                        target,
                        where,
                        grid_name=grid_name,
                        device=dev.name,
                        only={s.name for s in todo},
                        progress=lambda m: status.update(m),
                    )
            if json_out:
                return _print_json(
                    {
                        "target": target,
                        "device": dev.device,
                        "threads": n,
                        "grid": grid_name,
                        "missing": [s.name for s in todo],
                        "of": total,
                        "bundle": str(manifest) if manifest else None,
                    }
                )
            kinds = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
            out.print(
                f"{target} on {dev.device} ({n} threads): {len(todo)} of {total} kernel measurements ({grid_name} "
                f"grid) still missing: {kinds}"
            )
            if manifest is not None:
                out.print(f"  bundle      {manifest} ({len(todo)} artifacts): {dev.profile.via} runs them")
                out.print(
                    f"  then        edgekit latency calibrate --kernels --target {target} --device {device} "
                    f"--bundle {where} --reports REPORTS_DIR"
                )
            return None
        with LatencyDB(db) as database, err.status("measuring kernels…", spinner="dots") as status:
            res = sweep_kernels(
                target,
                device,
                n,
                database,
                grid_name=QUICK_GRID if quick else DEFAULT_GRID,
                progress=lambda m: status.update(m),
            )
            km = kernel_model_for(database, target, device, n)
        summary = kernel_model_summary(km) if km is not None else None
        if json_out:
            return _print_json({"sweep": res.to_dict(), "kernel_model": summary})
        out.print(
            f"[green]measured[/green] {res.samples} kernels of {res.specs} ({res.grid} grid) on {target}/{device} "
            f"({n} threads) in {res.programs} programs; stored in {database.path}"
        )
        if res.skipped:
            out.print(f"  no sample   {', '.join(res.skipped)} (under the per-op timer's resolution)")
        if summary is None:
            out.print("  too few kernel samples for a kernel model yet")
        else:
            kinds = ", ".join(f"{k} {v}" for k, v in summary["kinds"].items())
            out.print(f"  kernel model fitted on: {kinds}")
        return None
    with LatencyDB(db) as database, err.status("calibrating…", spinner="dots") as status:
        pred = calibrate(
            target,
            device,
            n,
            database,
            input_size=input_size,
            quantization=quantization,
            progress=lambda m: status.update(m),
        )
    if json_out:
        return _print_json(pred.to_dict())
    out.print(
        f"[green]fitted[/green] {target} on {device} ({n} threads) on {pred.points} models "
        f"({len(CALIBRATION)} measured now): leave-one-out Spearman {pred.loo['spearman']:.3f}, "
        f"median error {pred.loo['mdape']:.1%}"
    )


@latency_app.command("predict")
def latency_predict(
    model: str = typer.Argument(
        ..., help="Zoo name, path/to/file.py:Class or an edgekit checkpoint (pruned ones too)."
    ),
    target: str = typer.Option(..., "--target"),
    device: str = typer.Option("host", "--device"),
    threads: int | None = typer.Option(None, "--threads"),
    input_size: int | None = typer.Option(None, "--input-size"),
    quantization: str | None = typer.Option(None, "--quantize", help="Predict for artifacts of this scheme."),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Predict MODEL's latency on TARGET/DEVICE from the database's measurements, without compiling it."""
    _trust(trust_code)
    n = _threads_for(target, device, threads)
    with LatencyDB(db) as database:
        r = predict(model, target, device, n, database, input_size=input_size, quantization=quantization)
    if json_out:
        return _print_json(r)
    where = f"{model} on {target}/{device} ({n} threads) at {r['input_size']}"
    if r["method"] == "kernels":
        km = r["kernel_model"]
        out.print(
            f"{where}: predicted [bold]{r['predicted_ms']:.2f} ms[/bold] "
            f"({r['level'] * 100:.0f} % interval [{r['low_ms']:.2f}, {r['high_ms']:.2f}])"
        )
        out.print(
            f"  kernels     {len(r['kernels'])} ({r['kernels_ms']:.2f} ms) + overhead {r['overhead_ms']:.2f} ms; "
            f"fitted on {sum(km['kinds'].values())} measured kernels of {', '.join(km['kinds'])}"
        )
        if r["unseen_kinds"]:
            out.print(
                f"  [yellow]holds kernel kinds the fit has never seen: {', '.join(r['unseen_kinds'])}[/yellow] "
                "(predicted by a pooled fit, with a wide interval; `edgekit latency calibrate --kernels` measures them)"
            )
        if r["unseen_ops"]:
            out.print(
                f"  [yellow]holds ops the fit has no rate for: {', '.join(r['unseen_ops'])}[/yellow] "
                "(predicted at their kind's base rate, with a wide interval; `edgekit profile ART --per-op` of a "
                "network holding them records their rates)"
            )
        return None
    p = r["predictor"]
    out.print(
        f"{where}: [bold]{r['predicted_ms']:.2f} ms[/bold] "
        f"predicted (fitted on {p['points']} measured models; leave-one-out median error {p['loo']['mdape']:.1%})"
    )
    out.print(
        f"  no interval: the database has no kernel measurements for this key; "
        f"`edgekit latency calibrate --kernels --target {target} --device {device} --threads {n}` measures them"
    )


@app.command("select")
def select_cmd(
    target: str = typer.Option(..., "--target"),
    device: str = typer.Option("host", "--device"),
    budget_ms: float = typer.Option(..., "--budget-ms", help="Latency budget in ms (median, measured)."),
    candidates: str | None = typer.Option(
        None, "--candidates", help="Comma-separated references; name@0.3 = pruned 30 %. Default: the zoo."
    ),
    threads: int | None = typer.Option(None, "--threads"),
    input_size: int | None = typer.Option(None, "--input-size"),
    quantize: str | None = typer.Option(None, "--quantize", help="Compile every candidate with this scheme."),
    out_dir: Path = typer.Option(
        Path("out/select"), "--out", help="Where selection.json, pareto.png and artifacts go."
    ),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Pick the most accurate model within a latency budget on TARGET/DEVICE; measure it to confirm."""
    _trust(trust_code)
    n = _threads_for(target, device, threads)
    names = [c.strip() for c in candidates.split(",") if c.strip()] if candidates else None
    with LatencyDB(db) as database, err.status("selecting…", spinner="dots") as status:
        r = select(
            target,
            device,
            budget_ms,
            candidates=names,
            threads=n,
            db=database,
            out=out_dir,
            input_size=input_size,
            quantize=quantize,
            progress=lambda m: status.update(m),
        )
    if json_out:
        return _print_json(r)
    c = r["chosen"]
    table = Table(title=f"{target} on {device}, {n} threads, budget {budget_ms:g} ms")
    kernels = r.get("method") == "kernels"
    for col in ("candidate", "top-1 %", "predicted ms", *(("90 % interval",) if kernels else ()), "measured ms"):
        table.add_column(col, no_wrap=True)
    table.add_column("status", no_wrap=True)
    for k in r["candidates"]:
        interval = (f"[{_fmt(k['low_ms'])}, {_fmt(k['high_ms'])}]",) if kernels else ()
        table.add_row(
            _text(k["name"]),
            _fmt(k["accuracy"], "", 1),
            _fmt(k["predicted_ms"]),
            *interval,
            _fmt(k["measured_ms"]),
            k["status"],
        )
    out.print(table)
    if kernels:
        crossed = ", ".join(_text(k["name"]) for k in r["measured_because_interval_crosses_budget"]) or "none"
        out.print(f"  measured because the interval crosses the budget: {crossed}")
    out.print(
        f"[green]chose[/green] {c['model']}: {c['measured_ms']:.2f} ms measured (budget {budget_ms:g}), "
        f"top-1 {_fmt(c['accuracy'], '%', 1)} ({c['accuracy_source']})"
    )
    out.print(f"  artifact    {c['artifact']}")
    out.print(f"  pareto      {r['pareto_png']}")


@app.command("report")
def report_cmd(
    directory: Path = typer.Argument(..., help="A folder of artifacts (manifests), latency reports, selection.json."),
    out_path: Path | None = typer.Option(None, "--out", help="HTML file to write (default: DIR/report.html)."),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Write one self-contained HTML page about DIR: manifests, verification, latency, per-op bars, Pareto plot."""
    path = write_report(directory, out=out_path, db=db)
    out.print(f"[green]wrote[/green] {path}")


@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(..., help="A recipe YAML, e.g. recipes/quickstart.yaml."),
    out_dir: Path | None = typer.Option(None, "--out", help="Run folder (default: out/<recipe name>)."),
    overrides: list[str] | None = typer.Option(
        None,
        "--set",
        help="KEY=VALUE over the recipe, e.g. prune.ratio=0.3 "
        "(repeatable; VALUE is YAML: 3, true, [onnx, tflite], null).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and print the steps and what is cached; run nothing."
    ),
    db: Path | None = typer.Option(None, "--db", help=_DB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the run manifest (or the plan) as JSON."),
    trust_code: bool = _TRUST_CODE,
) -> None:
    """Carry out RECIPE: train, prune, distill, quantize, compile, verify, profile, report; finished steps are cached."""  # noqa: E501 - the help text, one line
    _trust(trust_code)
    if dry_run:
        steps = recipes.explain(recipe, out_dir, overrides)
        if json_out:
            return _print_json(steps)
        for s in steps:
            out.print(f"  {'cached' if s['cached'] else 'to run':<7} {s['name']:<20} {s['key'][:12]}", highlight=False)
        out.print(f"{sum(not s['cached'] for s in steps)} of {len(steps)} steps to run")
        return None
    quiet = json_out or launched_rank() > 0
    with err.status("starting…", spinner="dots") if not quiet else _null() as status:
        result = recipes.run(
            recipe,
            out_dir,
            overrides,
            db=db,
            log=(lambda line: None) if json_out else (lambda line: out.print("  " + line, highlight=False)),
            status=(lambda m: status.update(m)) if not quiet else None,
        )
    if launched_rank() > 0:
        return None  # rank 0 reports the run
    m = result.manifest
    if json_out:
        return _print_json(m)
    counts = {k: sum(s["status"] == k for s in m["steps"]) for k in ("ran", "cached", "skipped")}
    out.print(
        f"[green]run {m['status']}[/green] in {m['seconds']:.1f} s: {counts['ran']} steps ran, "
        f"{counts['cached']} cached, {counts['skipped']} skipped"
    )
    if m.get("report"):
        out.print(f"  report      {result.out / m['report']}")
    out.print(f"  artifacts   {result.out / 'artifacts'}")
    out.print(f"  manifest    {result.out / 'run.json'}")


demo_app = typer.Typer(no_args_is_help=True, help="The Android and iOS demo apps.")
app.add_typer(demo_app, name="demo")


@demo_app.command("bundle")
def demo_bundle(
    artifact: Path = typer.Argument(
        ..., help="A compiled artifact with its manifest beside it (.pte, .tflite, .mlpackage)."
    ),
    app_name: str = typer.Option(..., "--app", help="android (ExecuTorch, TFLite) or ios (Core ML, ExecuTorch)."),
    out_dir: Path = typer.Option(..., "--out", help="A new folder for the app."),
    labels: str | None = typer.Option(
        None,
        "--labels",
        help="Labels file (one per line) or a dataset "
        "(default: the training data's classes where the checkpoint records them).",
    ),
    device_name: str | None = typer.Option(
        None, "--device-name", help="Device id the reports carry (default: android-app / iphone, as in targets/)."
    ),
    runs: int = typer.Option(50, "--runs", help="Benchmark mode's default timed runs."),
    warmup: int = typer.Option(10, "--warmup", help="Benchmark mode's default warm-up runs."),
    threads: int | None = typer.Option(
        None, "--threads", help="Benchmark threads (default: 4 on Android, the runtime's on iOS)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Copy a demo app to DIR with ARTIFACT, its manifest, labels and preprocessing in its assets, ready to build."""
    r = bundle(
        artifact, app_name, out_dir, labels=labels, device_name=device_name, runs=runs, warmup=warmup, threads=threads
    )
    if json_out:
        return _print_json(r)
    b = r["bundle"]
    out.print(
        f"[green]wrote[/green] {r['out']}: the {r['app']} demo app with {b['artifact']['name']} as "
        f"{r['assets']}/{r['model_file']} ({r['runtime']})"
    )
    p = b["preprocessing"]
    out.print(
        f"  input       {b['input']['name']} {b['input']['shape']} {b['input']['dtype']}, "
        + (
            "preprocessing baked into the model"
            if p.get("baked_in")
            else f"x/255, mean {tuple(p['mean'])}, std {tuple(p['std'])}"
        ),
        highlight=False,
    )
    out.print(f"  labels      {b['num_classes']} from {r['labels']}")
    out.print(f"  next        see {r['out']}/README.md: build, run, benchmark, then `edgekit profile import`")


# The usage errors typer raises under standalone_mode=False are click's ClickException. Recent typer runs on its
# own copy of click (`typer._click`; `click` itself is no dependency of typer's or edgekit's), so the class is
# found through typer's public BadParameter, which derives from it whichever click typer uses.
_CLICK_ERROR: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# What the machine refuses, as opposed to a bug: the path and the reason are the whole story.
_WRITE_ERRORS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.ENOTDIR,
    errno.EEXIST,
}


def _interrupted() -> str:
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "edgekit")
    kept = (
        "finished steps are cached, and the same command continues from them"
        if command == "run"
        else "files already complete are kept; nothing half-written was left behind"
    )
    return f"interrupted: edgekit {command} stopped; {kept}"


def main() -> None:
    """Entry point: a user's mistake is one line on stderr and exit code 2, never a traceback."""
    if launched_rank() > 0:
        out.quiet = True  # under torchrun, rank 0 prints the results; every rank still prints its errors
    try:
        # in a context of its own, trusting no code but what the command names: --trust-code ends with the command
        context = contextvars.copy_context()
        context.run(reset_trusted_code)
        rc = context.run(app, standalone_mode=False, prog_name="edgekit")  # typer.Exit's code is handed back
        if rc == 130:  # typer turns Ctrl-C into Exit(130)
            raise KeyboardInterrupt
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except EdgekitError as e:
        err.print(f"error: {e}", soft_wrap=True, markup=False, highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print(_interrupted(), markup=False, highlight=False)
        sys.exit(130)
    except OSError as e:
        if e.errno not in _WRITE_ERRORS:
            raise
        where = f"'{e.filename}'" if e.filename else "a file"
        err.print(
            f"error: could not write {where}: {e.strerror or e}; choose a folder you can write to with space left "
            "(nothing half-written was left behind)",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        sys.exit(2)
    except typer.Exit as e:
        if e.exit_code == 130:
            err.print(_interrupted(), markup=False, highlight=False)
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except _CLICK_ERROR as e:  # a usage error (missing argument, unknown option, a value of the wrong type)
        ctx = getattr(e, "ctx", None)
        command = ctx.command_path if ctx is not None else "edgekit"
        message = e.format_message().rstrip(".")
        message = message[:1].lower() + message[1:]
        err.print(f"error: {message}; see {command} --help", soft_wrap=True, markup=False, highlight=False)
        sys.exit(e.exit_code)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
