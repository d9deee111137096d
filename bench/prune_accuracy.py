"""Pruning and accuracy: every method at 50 % on a MobileViG-Ti trained on Fashion-MNIST.

MobileViG-Ti (seeded init, no ImageNet weights: nothing is downloaded) is trained briefly on
Fashion-MNIST (Debian package `dataset-fashion-mnist`) at a small input size, then pruned at 50 % by
each method and evaluated on the full 10 000-image test split: right after pruning (no fine-tuning)
and after a short fine-tune. Fine-tuning adds training the base model never had, so the unpruned
model gets the same fine-tune as a control, and the gap is reported against both.

Goals (issue 3): every method within 1.0 point of the unpruned model after fine-tuning; DIMAP 50 %
unstructured within 0.5 point with no fine-tuning.

    python bench/prune_accuracy.py | tee bench/prune_accuracy.txt
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

VARIANTS = [  # (label, method, structured, extra prune kwargs)
    ("magnitude unstructured", "magnitude", False, {}),
    ("dimap unstructured", "dimap", False, {}),
    ("magnitude structured", "magnitude", True, {}),
    ("dimap structured", "dimap", True, {}),
    ("oto hesso", "oto", True, {"optimizer": "hesso"}),
    ("oto dhspg", "oto", True, {"optimizer": "dhspg"}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilevig_ti")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3, help="base training epochs")
    ap.add_argument("--limit", type=int, default=20000, help="training images per epoch (seeded subset)")
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--oto-steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated variant labels to run (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgekit-prune-acc-"))
    common = dict(data=args.data, input_size=args.size, limit=args.limit, lr=args.lr)
    t0 = time.perf_counter()
    base = work / "base.pt"
    edgekit.train(args.model, out=base, epochs=args.epochs, **common)
    val = load_dataset(args.data, args.size).val
    net = load_model(str(base)).model
    acc0, macs0 = accuracy(net, val), count_macs(net, args.size)
    params0 = sum(int((p != 0).sum()) for p in net.parameters())
    print(
        f"# {args.model} on {args.data} at {args.size}x{args.size}: trained {args.epochs} epochs of {args.limit} "
        f"images ({time.perf_counter() - t0:.0f} s); test split {len(val)} images"
    )
    print(
        f"# fine-tune: {args.ft_epochs} epoch(s) of {args.limit} images, lr {args.lr / 2:g}; "
        f"OTO: {args.oto_steps} steps; ratio {args.ratio:.0%}"
    )
    ctrl = work / "control.pt"
    edgekit.train(str(base), out=ctrl, epochs=args.ft_epochs, **{**common, "lr": args.lr / 2})
    acc_ctrl = accuracy(load_model(str(ctrl)).model, val)
    print(f"# unpruned: {acc0:.2%}; unpruned + the same fine-tune (control): {acc_ctrl:.2%}")
    print(
        f"{'variant':24s} {'nonzero':>8s} {'MACs':>6s} {'no FT':>7s} {'drop':>6s} {'FT':>7s} {'drop':>6s} "
        f"{'vs ctrl':>7s} {'seconds':>7s}"
    )
    print(f"{'unpruned':24s} {1:8.0%} {1:6.0%} {acc0:7.2%} {'':>6s} {acc_ctrl:7.2%}")
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    for label, method, structured, extra in VARIANTS:
        if only and label not in only:
            continue
        t = time.perf_counter()
        ckpt = work / f"{label.replace(' ', '_')}.pt"
        kw = {"data": args.data, "steps": args.oto_steps} if method == "oto" else {}
        edgekit.prune(str(base), method, args.ratio, structured=structured, out=ckpt, **kw, **extra)
        pruned = load_model(str(ckpt)).model
        acc_p = accuracy(pruned, val)
        macs = count_macs(pruned, args.size) / macs0
        nonzero = sum(int((p != 0).sum()) for p in pruned.parameters()) / params0
        ft = work / f"{label.replace(' ', '_')}_ft.pt"
        edgekit.train(str(ckpt), out=ft, epochs=args.ft_epochs, **{**common, "lr": args.lr / 2})
        acc_ft = accuracy(load_model(str(ft)).model, val)
        print(
            f"{label:24s} {nonzero:8.0%} {macs:6.0%} {acc_p:7.2%} {100 * (acc0 - acc_p):+6.2f} {acc_ft:7.2%} "
            f"{100 * (acc0 - acc_ft):+6.2f} {100 * (acc_ctrl - acc_ft):+7.2f} {time.perf_counter() - t:7.0f}",
            flush=True,
        )
    print(
        "# drop = points below the unpruned model (negative: above); vs ctrl = below the unpruned model fine-tuned "
        "as long; nonzero = parameters left non-zero"
    )
    print(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
