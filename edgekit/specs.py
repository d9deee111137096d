"""One typed spec per stage: its options, their defaults, bounds and help, written once.

The CLI (option defaults and help), the recipe schema (its sections are these specs) and the Python API
(keyword defaults) all read them, so a default changes in one place. Checks that need another room (a
target's schemes, the registered pruning methods) are made by that room, not here: this module imports
nothing of edgekit's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SEED = 0
DEFAULT_DATA = "digits"
# What a model can be asked for, wherever it is asked (the CLI, recipes, checkpoints): a square input side
# (2048 is 12.6 M pixels; larger is a typo, and would allocate tens of GB before anything failed) and a class count.
MIN_INPUT, MAX_INPUT = 8, 2048
MAX_CLASSES = 100_000
MAX_THREADS = 256


class Spec(BaseModel):
    """A stage's options. Unknown keys are errors (a typo in a recipe must not be ignored)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of option `name` (for a CLI option or an API keyword)."""
        f = cls.model_fields[name]
        return f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]

    @classmethod
    def help(cls, name: str) -> str:
        """The option's help text, as the CLI and the recipe reference print it."""
        return cls.model_fields[name].description or ""


class RunSpec(Spec):
    """Where a training stage runs (train, distill, OTO): the device, the precision, the data loader's workers."""

    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$",
        description="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps.",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, or bf16 / fp16 autocast (fp16 with a gradient scaler)."
    )
    workers: int | None = Field(
        None, ge=0, le=64, description="Data-loading processes (default: 0 for in-memory data, else up to 8)."
    )


class TrainSpec(RunSpec):
    epochs: int = Field(1, ge=1, description="Passes over the training set.")
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate (cosine schedule, linear warm-up).")
    batch_size: int = Field(64, ge=1, description="Images per step, over all processes (torchrun: split among them).")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    limit: int | None = Field(None, ge=1, description="Train on a seeded subset of this many images.")
    augment: Literal["none", "basic", "trivial", "deit"] = Field(
        "none", description="Train-time augmentation: none, basic, trivial or deit (kornia, on the device)."
    )
    accumulate: int = Field(1, ge=1, le=1024, description="Batches whose gradients make one optimizer step.")
    clip_grad: float | None = Field(None, gt=0, description="Clip the gradients' global norm to this.")
    ema: float | None = Field(
        None, gt=0, lt=1, description="Keep an exponential moving average of the weights with this decay, e.g. 0.9998."
    )


class DistillSpec(TrainSpec):
    teacher: str | None = Field(
        None,
        description="The teacher: a trained checkpoint or a zoo name "
        "(recipes: default the model as it was before pruning).",
    )
    teacher_weights: str | None = Field(None, description="State dict of the teacher.")
    temperature: float = Field(4.0, gt=0, description="Soft-label temperature T.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the teacher's term against the labels'.")
    hard: bool = Field(False, description="DeiT hard distillation (the teacher's top-1 as the label).")
    features: list[str] = Field(default_factory=list, description="STUDENT_LAYER:TEACHER_LAYER pairs to match.")


class PruneSpec(RunSpec):
    method: str = Field(description="A registered pruning method: oto, magnitude or dimap.")
    ratio: float = Field(
        gt=0, lt=1, description="Fraction to remove: of weights (unstructured) or channels (structured)."
    )
    structured: bool = Field(False, description="Remove whole channel groups (real speed-ups; oto always does).")
    steps: int = Field(200, ge=1, description="oto: training steps.")
    optimizer: str = Field("hesso", description="oto: hesso (OTOv3 default) or dhspg.")
    round_to: int = Field(
        8, ge=1, le=256, description="Structured: keep a multiple of this many channels per group (1: any count)."
    )


class QuantizeSpec(Spec):
    """How a quantized compile calibrates and controls accuracy (the scheme itself is per target)."""

    calib_size: int = Field(256, ge=32, description="Calibration images (at least 32).")
    val_samples: int = Field(1000, ge=1, description="Validation images for the accuracy check.")
    max_drop: float | None = Field(
        None, ge=0, description="Most accuracy points to lose; keeps the most harmful layers float."
    )
    float_layers: list[str] = Field(default_factory=list, description="Module paths to keep float.")


class CompileSpec(Spec):
    """Options of `compile` that targets read (each target checks the ones that apply to it)."""

    delegate: str | None = Field(None, description="ExecuTorch: xnnpack (default), coreml or none.")
    precision: str = Field("fp16", description="Core ML compute precision: fp16 or fp32.")
    min_target: str = Field("iOS16", description="Core ML minimum deployment target, e.g. iOS16, macOS13.")
    image_input: bool = Field(False, description="Core ML: take an RGB image, preprocessing baked in.")


class VerifySpec(Spec):
    enabled: bool = Field(True, description="Check the artifact against PyTorch.")
    samples: int = Field(4, ge=1, description="Number of fixed inputs.")


class ProfileSpec(Spec):
    runs: int = Field(50, ge=1, description="Timed runs.")
    warmup: int = Field(10, ge=0, description="Untimed runs first.")
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description="Runtime threads (default: the device's).")
    device: str = Field("host", description="host, adb[:SERIAL], or a device of the target definitions.")
    per_op: bool = Field(False, description="Per-op rows (where the runtime gives them).")
    record: bool = Field(True, description="Record the report in the latency database.")
