"""Does distillation recover what pruning took? OTO-pruned MobileViG-Ti, fine-tuned with and without a teacher.

MobileViG-Ti (seeded init) is trained briefly on Fashion-MNIST at a small input size: that is the teacher.
OTO (HESSO) prunes it to 50 % group sparsity, then the pruned student is fine-tuned for the same epochs on
the same images twice: on the labels alone, and with soft-label distillation from the unpruned teacher
(plus DeiT-style distillation through MobileViG's distillation head). Accuracy on the full test split.

Goal (issue 4): distillation closes at least half of the gap between the fine-tuned student and the teacher:
(acc_kd - acc_ft) / (acc_teacher - acc_ft) >= 0.5.

    python bench/distill.py | tee bench/distill.txt
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import edgekit
from edgekit.data import accuracy, load_dataset
from edgekit.models import count_macs, load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilevig_ti")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3, help="teacher training epochs")
    ap.add_argument("--limit", type=int, default=20000, help="teacher training images per epoch")
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--ft-limit", type=int, default=5000, help="fine-tuning images per epoch (a short fine-tune)")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--oto-steps", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.7)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgekit-distill-bench-"))
    t0 = time.perf_counter()
    teacher = work / "teacher.pt"
    edgekit.train(
        args.model, args.data, out=teacher, epochs=args.epochs, input_size=args.size, limit=args.limit, lr=args.lr
    )
    student = work / "student.pt"
    edgekit.prune(str(teacher), "oto", args.ratio, out=student, data=args.data, steps=args.oto_steps)
    val = load_dataset(args.data, args.size).val
    acc = {
        "teacher": accuracy(load_model(str(teacher)).model, val),
        "pruned, no fine-tune": accuracy(load_model(str(student)).model, val),
    }
    macs = count_macs(load_model(str(student)).model, args.size) / count_macs(load_model(str(teacher)).model, args.size)
    common = dict(epochs=args.ft_epochs, limit=args.ft_limit, lr=args.lr / 2)
    t = time.perf_counter()
    edgekit.train(str(student), args.data, out=work / "ft.pt", **common)
    ft_s = time.perf_counter() - t
    acc["fine-tuned on labels"] = accuracy(load_model(str(work / "ft.pt")).model, val)
    t = time.perf_counter()
    edgekit.distill(
        str(student),
        str(teacher),
        args.data,
        out=work / "kd.pt",
        temperature=args.temperature,
        alpha=args.alpha,
        **common,
    )
    kd_s = time.perf_counter() - t
    acc["fine-tuned with distillation"] = accuracy(load_model(str(work / "kd.pt")).model, val)
    print(
        f"# {args.model} on {args.data} at {args.size}x{args.size}: teacher trained {args.epochs} epochs of "
        f"{args.limit} images; OTO (HESSO) {args.ratio:.0%}, {args.oto_steps} steps -> {macs:.0%} of the MACs"
    )
    print(
        f"# fine-tunes: {args.ft_epochs} epoch(s) of {args.ft_limit} images each, lr {args.lr / 2:g}; distillation: "
        f"T {args.temperature}, alpha {args.alpha} (soft KD on the distillation head, labels on the class head)"
    )
    print(f"# test split: {len(val)} images")
    for k, v in acc.items():
        print(f"{k:30s} {v:7.2%}")
    gap = acc["teacher"] - acc["fine-tuned on labels"]
    closed = (acc["fine-tuned with distillation"] - acc["fine-tuned on labels"]) / gap if gap > 0 else float("nan")
    print(f"gap teacher - fine-tuned: {100 * gap:.2f} points; distillation closes {closed:.0%} of it (goal >= 50 %)")
    print(f"# fine-tune {ft_s:.0f} s, distillation {kd_s:.0f} s; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
