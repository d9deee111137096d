"""Knowledge-distillation losses: soft labels, DeiT-style hard labels through a distillation head, features.

- Soft (Hinton et al.): (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T)).
- Hard (DeiT): 1/2 CE(class head, y) + 1/2 CE(distillation head, argmax teacher).
- With a distillation head (MobileViG, GreedyViG), the class head learns from the labels and the
  distillation head from the teacher, as in DeiT; without one, both terms act on the same logits.
- Feature distillation: MSE between a student layer's output and a teacher layer's, through a 1x1
  convolution (or linear) adapter when their widths differ (a pruned student is narrower), the
  teacher's map pooled to the student's spatial size when theirs differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EdgekitError


def soft_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True
    ) * (t * t)


class _Capture:
    """Forward hooks that keep the outputs of named modules."""

    def __init__(self, model: nn.Module, names: list[str], who: str):
        modules = dict(model.named_modules())
        self.out: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in names:
            if name not in modules:
                near = [n for n in modules if n and (n.startswith(name) or name.startswith(n))][:3]
                hint = f" (near: {', '.join(near)})" if near else ""
                raise EdgekitError(f"{who} has no layer '{name}'{hint}; name a module from model.named_modules()")
            self.handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(_m, _inp, output):
            self.out[name] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def check_options(temperature: float, alpha: float) -> None:
    if temperature <= 0:
        raise EdgekitError(f"--temperature {temperature} must be positive, e.g. 4")
    if not 0.0 <= alpha <= 1.0:
        raise EdgekitError(f"--alpha {alpha} must be between 0 and 1 (the weight of the teacher's term)")


class Distiller(nn.Module):
    """The distillation loss for one (student, teacher) pair; its adapters train with the student."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        temperature: float = 4.0,
        alpha: float = 0.5,
        hard: bool = False,
        features: list[tuple[str, str]] | None = None,
        feature_weight: float = 1.0,
        example: torch.Tensor | None = None,
    ):
        super().__init__()
        check_options(temperature, alpha)
        self.teacher = [teacher.eval()]  # a list: not a sub-module, so not trained, saved or moved
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha, self.hard = temperature, alpha, hard
        self.features = list(features or [])
        self.feature_weight = feature_weight
        self.adapters = nn.ModuleList()
        self.ce = nn.CrossEntropyLoss()
        if self.features:
            self.s_cap = _Capture(student, [s for s, _ in self.features], "the student")
            self.t_cap = _Capture(teacher, [t for _, t in self.features], "the teacher")
            if example is None:
                raise ValueError("feature distillation needs an example input to size its adapters")
            with torch.no_grad():
                was = student.training
                student.eval()
                student(example)
                student.train(was)
                teacher(example)
            for s, t in self.features:
                fs, ft = self.s_cap.out[s], self.t_cap.out[t]
                cs, ct = fs.shape[1], ft.shape[1]
                if fs.dim() == 4:
                    self.adapters.append(nn.Conv2d(cs, ct, 1, bias=False) if cs != ct else nn.Identity())
                else:
                    self.adapters.append(nn.Linear(cs, ct, bias=False) if cs != ct else nn.Identity())

    def loss(self, out, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_out = self.teacher[0](x)
            t_logits = t_out[0] if isinstance(t_out, (tuple, list)) else t_out
        if isinstance(out, (tuple, list)):
            cls, dist = out[0], out[1]
        else:
            cls = dist = out
        if self.hard:
            loss = 0.5 * self.ce(cls, y) + 0.5 * self.ce(dist, t_logits.argmax(1))
        else:
            kd = soft_kd(dist, t_logits, self.temperature)
            if dist is not cls:  # DeiT: the class head on labels, the distillation head on the teacher
                loss = 0.5 * self.ce(cls, y) + 0.5 * ((1 - self.alpha) * self.ce(dist, y) + self.alpha * kd)
            else:
                loss = (1 - self.alpha) * self.ce(cls, y) + self.alpha * kd
        for (s, t), adapter in zip(self.features, self.adapters):
            fs, ft = adapter(self.s_cap.out[s]), self.t_cap.out[t]
            if fs.dim() == 4 and fs.shape[-2:] != ft.shape[-2:]:
                ft = F.adaptive_avg_pool2d(ft, fs.shape[-2:])
            loss = loss + self.feature_weight * F.mse_loss(fs, ft)
        return loss

    def close(self) -> None:
        if self.features:
            self.s_cap.close()
            self.t_cap.close()
