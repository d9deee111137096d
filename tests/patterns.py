"""Small networks written the way each family's authors write theirs, to test structured pruning against them.

Each class follows the public source named in its docstring: the same module nesting, the attribute names that
matter (``qkv``, ``proj``, ``attention_biases``, ``relative_position_bias_table``, ...) and the same forward idioms
(in-place adds, chunk/cat/channel shuffle, view/permute/transpose reshapes, buffers that index parameters), so that a
pruning tool meets the graph patterns users bring. The code is written afresh and cut down: tiny widths, at most four
stages, a ``num_classes`` head. Every network runs at 64x64 and 224x224 except :class:`LeViTLike`, which is built for
one resolution (see :data:`INPUT_SIZE`). Initialisation is PyTorch's default rather than the families' zero or tiny
inits (LeViT's zero BN gamma, MobileNetV4's 1e-5 layer scale), so that every branch moves the output and a wrong
pruning shows up in a comparison. Networks with BatchNorm on a pooled vector (LeViT's head) need a batch of 2 or more
in train mode. Imports: torch and the standard library only.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor``, never going down by more than 10% (the TF/torchvision rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """Conv2d + BatchNorm2d + optional in-place activation, as torchvision's ``Conv2dNormActivation``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: Callable[..., nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision ``ops.misc.SqueezeExcitation``: pool, fc1, act, fc2, gate, then ``scale * input``."""

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, input: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(input)))))
        return scale * input


# --- 1. ResNet (torchvision) ----------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNetBasic(nn.Module):
    """ResNet/BasicBlock (pytorch/vision torchvision/models/resnet.py): ``out += identity``, reused inplace ReLU."""

    def __init__(self, num_classes: int = 10, layers=(2, 2, 1, 1), widths=(16, 32, 64, 96)) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 10) -> ResNetBasic:
    """ResNet-18's stages and widths (torchvision ``resnet18``): the compute-bound member of the benchmark."""
    return ResNetBasic(num_classes, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512))


# --- 2. MobileNetV3 (torchvision) -----------------------------------------------------------------------------------


class MNv3InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool, use_hs: bool, stride: int):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        act = nn.Hardswish if use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=act))
        layers.append(ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if use_se:
            squeeze = _make_divisible(expanded // 4, 8)
            layers.append(SqueezeExcitation(expanded, squeeze, scale_activation=nn.Hardsigmoid))
        layers.append(ConvBNAct(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, input: Tensor) -> Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result += input
        return result


class MobileNetV3Like(nn.Module):
    """MobileNetV3-Small (pytorch/vision torchvision/models/mobilenetv3.py): hardsigmoid SE, in-place add/dropout."""

    # input, kernel, expanded, out, SE, hardswish, stride
    SETTING = (
        (16, 3, 16, 16, True, False, 2),
        (16, 3, 72, 24, False, False, 2),
        (24, 3, 88, 24, False, False, 1),
        (24, 5, 96, 40, True, True, 2),
        (40, 5, 120, 40, True, True, 1),
        (40, 5, 144, 48, True, True, 1),
    )

    def __init__(self, num_classes: int = 10, last_channel: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, self.SETTING[0][0], 3, 2, act=nn.Hardswish)]
        layers += [MNv3InvertedResidual(*cnf) for cnf in self.SETTING]
        lastconv_in = self.SETTING[-1][3]
        lastconv_out = 6 * lastconv_in
        layers.append(ConvBNAct(lastconv_in, lastconv_out, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_out, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=0.2, inplace=True),
            nn.Linear(last_channel, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


# --- 3. ShuffleNetV2 (torchvision) ----------------------------------------------------------------------------------


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class ShuffleInvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch_features = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, 1, 0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            nn.Conv2d(branch_features, branch_features, 3, stride, 1, groups=branch_features, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Like(nn.Module):
    """ShuffleNetV2 (pytorch/vision torchvision/models/shufflenetv2.py): chunk, cat, view-transpose channel shuffle."""

    def __init__(self, num_classes: int = 10, stages_repeats=(2, 2, 2), stages_out_channels=(16, 24, 48, 96, 128)):
        super().__init__()
        input_channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, input_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(input_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stage_names = ("stage2", "stage3", "stage4")
        for name, repeats, output_channels in zip(stage_names, stages_repeats, stages_out_channels[1:]):
            seq = [ShuffleInvertedResidual(input_channels, output_channels, 2)]
            seq += [ShuffleInvertedResidual(output_channels, output_channels, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*seq))
            input_channels = output_channels
        output_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(output_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        x = x.mean([2, 3])  # globalpool
        return self.fc(x)


# --- 4. GhostNet (timm) ---------------------------------------------------------------------------------------------


def hard_sigmoid(x: Tensor) -> Tensor:
    return F.relu6(x + 3.0) / 6.0


class GhostSqueezeExcite(nn.Module):
    """timm ``SqueezeExcite`` as GhostNet builds it: mean-pool, reduce, ReLU, expand, hard-sigmoid gate."""

    def __init__(self, in_chs: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        rd_channels = _make_divisible(in_chs * rd_ratio, 4)
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * hard_sigmoid(x_se)


class GhostModule(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, ratio: int = 2, dw_size: int = 3, relu=True):
        super().__init__()
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / ratio)
        new_chs = init_chs * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_chs, init_chs, kernel_size, 1, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_chs),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_chs, new_chs, dw_size, 1, dw_size // 2, groups=init_chs, bias=False),
            nn.BatchNorm2d(new_chs),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, : self.out_chs, :, :]


class GhostBottleneck(nn.Module):
    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size=3, stride=1, se_ratio=0.0) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, relu=True)
        if stride > 1:
            pad = (dw_kernel_size - 1) // 2
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad, groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        else:
            self.conv_dw = None
            self.bn_dw = None
        self.se = GhostSqueezeExcite(mid_chs, rd_ratio=se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, relu=False)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            pad = (dw_kernel_size - 1) // 2
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, pad, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.ghost1(x)
        if self.conv_dw is not None:
            x = self.bn_dw(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        x += self.shortcut(shortcut)
        return x


class GhostNetLike(nn.Module):
    """GhostNet-0.5x (huggingface/pytorch-image-models timm/models/ghostnet.py): cat-then-slice ghost module, SE."""

    # kernel, expansion, out, SE ratio, stride; one inner list per stage (GhostNet's first five stages, width 1.0)
    CFGS = (
        ((3, 16, 16, 0.0, 1),),
        ((3, 48, 24, 0.0, 2), (3, 72, 24, 0.0, 1)),
        ((5, 72, 40, 0.25, 2), (5, 120, 40, 0.25, 1)),
        ((3, 240, 80, 0.0, 2), (3, 184, 80, 0.25, 1)),
    )

    def __init__(self, num_classes: int = 10, width: float = 0.5, drop_rate: float = 0.2) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        stem_chs = _make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(3, stem_chs, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        prev_chs = stem_chs
        stages: list[nn.Module] = []
        exp_size = 16
        for cfg in self.CFGS:
            layers = []
            for k, exp_size, c, se_ratio, s in cfg:
                out_chs = _make_divisible(c * width, 4)
                mid_chs = _make_divisible(exp_size * width, 4)
                layers.append(GhostBottleneck(prev_chs, mid_chs, out_chs, k, s, se_ratio=se_ratio))
                prev_chs = out_chs
            stages.append(nn.Sequential(*layers))
        out_chs = _make_divisible(exp_size * width, 4)
        stages.append(nn.Sequential(ConvBNAct(prev_chs, out_chs, 1)))
        self.blocks = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(out_chs, 256, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.flatten(self.act2(self.conv_head(self.global_pool(x))))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)


# --- 5. RegNetY (torchvision) ---------------------------------------------------------------------------------------


class BottleneckTransform(nn.Sequential):
    def __init__(self, width_in: int, width_out: int, stride: int, group_width: int, se_ratio: float | None) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        w_b = width_out  # bottleneck multiplier 1.0
        g = w_b // group_width
        layers["a"] = ConvBNAct(width_in, w_b, 1)
        layers["b"] = ConvBNAct(w_b, w_b, 3, stride, groups=g)
        if se_ratio:
            # the SE reduction is relative to the block's input width
            layers["se"] = SqueezeExcitation(w_b, int(round(se_ratio * width_in)), activation=nn.ReLU)
        layers["c"] = ConvBNAct(w_b, width_out, 1, act=None)
        super().__init__(layers)


class ResBottleneckBlock(nn.Module):
    def __init__(self, width_in: int, width_out: int, stride: int, group_width: int, se_ratio: float | None):
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = ConvBNAct(width_in, width_out, 1, stride, act=None)
        self.f = BottleneckTransform(width_in, width_out, stride, group_width, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = self.proj(x) + self.f(x)
        else:
            x = x + self.f(x)
        return self.activation(x)


class AnyStage(nn.Sequential):
    def __init__(self, width_in, width_out, stride, depth, group_width, se_ratio, stage_index: int) -> None:
        super().__init__()
        for i in range(depth):
            block = ResBottleneckBlock(
                width_in if i == 0 else width_out, width_out, stride if i == 0 else 1, group_width, se_ratio
            )
            self.add_module(f"block{stage_index}-{i}", block)  # torchvision's names, with a hyphen


class RegNetYLike(nn.Module):
    """RegNetY (pytorch/vision torchvision/models/regnet.py): grouped 3x3 with group width 8, SE, proj shortcut."""

    def __init__(self, num_classes: int = 10, widths=(24, 48, 96), depths=(1, 2, 2), group_width=8, se_ratio=0.25):
        super().__init__()
        stem_width = 16
        self.stem = ConvBNAct(3, stem_width, 3, 2)
        blocks = []
        current = stem_width
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks.append((f"block{i + 1}", AnyStage(current, w, 2, d, group_width, se_ratio, stage_index=i + 1)))
            current = w
        self.trunk_output = nn.Sequential(OrderedDict(blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(current, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.trunk_output(self.stem(x)))
        x = x.flatten(start_dim=1)
        return self.fc(x)


# --- 6. Hierarchical ViT (timm ViT attention + Swin patch merging) --------------------------------------------------


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, act_layer: Callable[..., nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """timm ``timm/layers/attention.py`` Attention: one ``qkv`` Linear, (3, B, heads, N, head_dim) permute, the
    attention laid back out with the width it holds (``self.attn_dim``), ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dim = num_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, self.attn_dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(self.attn_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = attn.softmax(-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj(x)


class InputWidthAttention(Attention):
    """The older timm / microsoft Swin form: the attention laid out with the width read from the block's input
    (``reshape(B, N, C)``), which ties its heads to the residual width: edgekit leaves those heads out, and says so."""

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class PatchMerging(nn.Module):
    """Swin patch merging: concat the 2x2 neighbours to 4C, LayerNorm, Linear(4C, 2C) without bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        if H % 2 == 1 or W % 2 == 1:  # padded as in the Swin detection code
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], -1)
        x = x.view(B, -1, 4 * C)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        H, W = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)  # B, N, C
        return self.norm(x), H, W


class HierViT(nn.Module):
    """Hierarchical ViT (timm timm/layers/attention.py Attention + Swin PatchMerging): global MHSA in each stage."""

    def __init__(self, num_classes: int = 10, dims=(24, 48, 96), depths=(1, 2, 1), heads=(2, 4, 8)) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(4, dims[0])
        self.stages = nn.ModuleList(
            nn.Sequential(*[ViTBlock(d, h) for _ in range(n)]) for d, n, h in zip(dims, depths, heads)
        )
        self.merges = nn.ModuleList(PatchMerging(d) for d in dims[:-1])
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = self.patch_embed(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.merges):
                x = self.merges[i](x, H, W)
                H, W = (H + 1) // 2, (W + 1) // 2
        x = self.norm(x).mean(1)
        return self.head(x)


class HierViTInputWidth(HierViT):
    """:class:`HierViT` with the older attention form (:class:`InputWidthAttention`): its heads cannot go."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        for stage in self.stages:
            for block in stage:
                block.attn = InputWidthAttention(block.attn.qkv.in_features, block.attn.num_heads)


# --- 7. Swin Transformer (microsoft) --------------------------------------------------------------------------------


def window_partition(x: Tensor, window_size: int) -> Tensor:
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: Tensor, window_size: int, H: int, W: int) -> Tensor:
    B = int(windows.shape[0] / (H * W / window_size / window_size))
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


class WindowAttention(nn.Module):
    """timm ``swin_transformer.WindowAttention``: heads of ``head_dim`` (``dim // num_heads`` by default), q/k/v and
    the output laid out with ``-1``, a relative-position bias table with one column per head."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = (window_size, window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        attn_dim = head_dim * num_heads
        self.scale = head_dim**-0.5
        Wh, Ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * Wh - 1) * (2 * Ww - 1), num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(Wh), torch.arange(Ww), indexing="ij"))  # 2, Wh, Ww
        coords_flatten = torch.flatten(coords, 1)
        relative_coords = (coords_flatten[:, :, None] - coords_flatten[:, None, :]).permute(1, 2, 0).contiguous()
        relative_coords[:, :, 0] += Wh - 1
        relative_coords[:, :, 1] += Ww - 1
        relative_coords[:, :, 0] *= 2 * Ww - 1
        self.register_buffer("relative_position_index", relative_coords.sum(-1))
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=True)
        self.proj = nn.Linear(attn_dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.softmax(attn)
        x = (attn @ v).transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)


def _shift_attn_mask(Hp: int, Wp: int, window_size: int, shift_size: int, device: torch.device) -> Tensor:
    img_mask = torch.zeros((1, Hp, Wp, 1), device=device)
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    cnt = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, window_size).view(-1, window_size * window_size)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        B, L, C = x.shape
        ws = self.window_size
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        shift = self.shift_size if min(H, W) > ws else 0  # no shift when one window covers the map
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            attn_mask = _shift_attn_mask(Hp, Wp, ws, shift, x.device)
        else:
            attn_mask = None
        x_windows = window_partition(x, ws).view(-1, ws * ws, C)
        attn_windows = self.attn(x_windows, mask=attn_mask).view(-1, ws, ws, C)
        x = window_reverse(attn_windows, ws, Hp, Wp)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :H, :W, :].contiguous().view(B, H * W, C)
        x = shortcut + x
        x = x + self.mlp(self.norm2(x))
        return x


class SwinLike(nn.Module):
    """Swin (microsoft/Swin-Transformer, as timm writes its attention): window attention, rel-pos bias, rolled shift."""

    def __init__(self, num_classes=10, dims=(24, 48, 96), depths=(2, 2, 2), heads=(2, 4, 8), window_size=4) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(4, dims[0])
        self.layers = nn.ModuleList(
            nn.ModuleList(SwinBlock(d, h, window_size, 0 if i % 2 == 0 else window_size // 2) for i in range(n))
            for d, n, h in zip(dims, depths, heads)
        )
        self.downsamples = nn.ModuleList(PatchMerging(d) for d in dims[:-1])
        self.norm = nn.LayerNorm(dims[-1])
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = self.patch_embed(x)
        for i, blocks in enumerate(self.layers):
            for blk in blocks:
                x = blk(x, H, W)
            if i < len(self.downsamples):
                x = self.downsamples[i](x, H, W)
                H, W = (H + 1) // 2, (W + 1) // 2
        x = self.norm(x)
        x = torch.flatten(self.avgpool(x.transpose(1, 2)), 1)
        return self.head(x)


# --- 8. MobileViT v1 (apple/ml-cvnets, HF transformers attention) ---------------------------------------------------


class MV2Block(nn.Module):
    """cvnets ``InvertedResidual`` (MobileNetV2): exp_1x1, conv_3x3 depthwise, red_1x1; ``x + block(x)``."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int = 2) -> None:
        super().__init__()
        hidden = _make_divisible(int(round(cin * expand_ratio)), 8)
        self.block = nn.Sequential()
        if expand_ratio != 1:
            self.block.add_module("exp_1x1", ConvBNAct(cin, hidden, 1, act=nn.SiLU))
        self.block.add_module("conv_3x3", ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.SiLU))
        self.block.add_module("red_1x1", ConvBNAct(hidden, cout, 1, act=None))
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.block(x)
        return self.block(x)


class MobileViTSelfAttention(nn.Module):
    """HF transformers ``MobileViTSelfAttention``: three separate ``query``/``key``/``value`` Linear layers."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_attention_heads = num_heads
        self.attention_head_size = hidden_size // num_heads
        self.all_head_size = num_heads * self.attention_head_size
        self.query = nn.Linear(hidden_size, self.all_head_size)
        self.key = nn.Linear(hidden_size, self.all_head_size)
        self.value = nn.Linear(hidden_size, self.all_head_size)
        self.dense = nn.Linear(self.all_head_size, hidden_size)  # HF's MobileViTSelfOutput.dense

    def transpose_for_scores(self, x: Tensor) -> Tensor:
        x = x.view(x.size()[:-1] + (self.num_attention_heads, self.attention_head_size))
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states: Tensor) -> Tensor:
        q = self.transpose_for_scores(self.query(hidden_states))
        k = self.transpose_for_scores(self.key(hidden_states))
        v = self.transpose_for_scores(self.value(hidden_states))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        probs = nn.functional.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        context = context.view(context.size()[:-2] + (self.all_head_size,))
        return self.dense(context)


class TransformerEncoder(nn.Module):
    """cvnets ``TransformerEncoder``: pre-norm attention and pre-norm SiLU FFN, each with a residual add."""

    def __init__(self, embed_dim: int, ffn_dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_mha = nn.LayerNorm(embed_dim)
        self.attn = MobileViTSelfAttention(embed_dim, num_heads)
        self.pre_norm_ffn = nn.Sequential(
            nn.LayerNorm(embed_dim), nn.Linear(embed_dim, ffn_dim), nn.SiLU(), nn.Linear(ffn_dim, embed_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm_mha(x))
        return x + self.pre_norm_ffn(x)


class MobileViTBlock(nn.Module):
    """cvnets ``MobileViTBlock``: local conv rep, unfold to (B*P, N, C), transformer, fold, 1x1 proj, 3x3 fusion."""

    def __init__(self, cin: int, transformer_dim: int, ffn_dim: int, n_blocks: int, head_dim: int, patch: int = 2):
        super().__init__()
        self.local_rep = nn.Sequential()
        self.local_rep.add_module("conv_3x3", ConvBNAct(cin, cin, 3, act=nn.SiLU))
        self.local_rep.add_module("conv_1x1", nn.Conv2d(cin, transformer_dim, 1, bias=False))
        layers: list[nn.Module] = [
            TransformerEncoder(transformer_dim, ffn_dim, transformer_dim // head_dim) for _ in range(n_blocks)
        ]
        layers.append(nn.LayerNorm(transformer_dim))
        self.global_rep = nn.Sequential(*layers)
        self.conv_proj = ConvBNAct(transformer_dim, cin, 1, act=nn.SiLU)
        self.fusion = ConvBNAct(2 * cin, cin, 3, act=nn.SiLU)
        self.patch_h = self.patch_w = patch
        self.patch_area = patch * patch

    def unfolding(self, feature_map: Tensor) -> tuple[Tensor, dict]:
        patch_w, patch_h, patch_area = self.patch_w, self.patch_h, self.patch_area
        batch_size, in_channels, orig_h, orig_w = feature_map.shape
        new_h = int(math.ceil(orig_h / patch_h) * patch_h)
        new_w = int(math.ceil(orig_w / patch_w) * patch_w)
        interpolate = new_w != orig_w or new_h != orig_h
        if interpolate:
            feature_map = F.interpolate(feature_map, size=(new_h, new_w), mode="bilinear", align_corners=False)
        num_patch_w, num_patch_h = new_w // patch_w, new_h // patch_h
        num_patches = num_patch_h * num_patch_w
        x = feature_map.reshape(batch_size * in_channels * num_patch_h, patch_h, num_patch_w, patch_w)
        x = x.transpose(1, 2)  # [B*C*n_h, n_w, p_h, p_w]
        x = x.reshape(batch_size, in_channels, num_patches, patch_area).transpose(1, 3)  # [B, P, N, C]
        patches = x.reshape(batch_size * patch_area, num_patches, -1)
        info = {
            "orig_size": (orig_h, orig_w),
            "batch_size": batch_size,
            "interpolate": interpolate,
            "total_patches": num_patches,
            "num_patches_w": num_patch_w,
            "num_patches_h": num_patch_h,
        }
        return patches, info

    def folding(self, patches: Tensor, info: dict) -> Tensor:
        patches = patches.contiguous().view(info["batch_size"], self.patch_area, info["total_patches"], -1)
        batch_size, _, _, channels = patches.size()
        n_h, n_w = info["num_patches_h"], info["num_patches_w"]
        x = patches.transpose(1, 3)  # [B, C, N, P]
        x = x.reshape(batch_size * channels * n_h, n_w, self.patch_h, self.patch_w).transpose(1, 2)
        x = x.reshape(batch_size, channels, n_h * self.patch_h, n_w * self.patch_w)
        if info["interpolate"]:
            x = F.interpolate(x, size=info["orig_size"], mode="bilinear", align_corners=False)
        return x

    def forward(self, x: Tensor) -> Tensor:
        res = x
        patches, info = self.unfolding(self.local_rep(x))
        patches = self.global_rep(patches)
        fm = self.conv_proj(self.folding(patches, info))
        return self.fusion(torch.cat((res, fm), dim=1))


class MobileViTLike(nn.Module):
    """MobileViT v1 (apple/ml-cvnets cvnets/modules/mobilevit_block.py): MV2 blocks, unfold/fold, separate q/k/v."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_1 = ConvBNAct(3, 16, 3, 2, act=nn.SiLU)
        self.layer_1 = MV2Block(16, 16, 1)
        self.layer_2 = nn.Sequential(MV2Block(16, 24, 2), MV2Block(24, 24, 1))
        self.layer_3 = nn.Sequential(MV2Block(24, 48, 2), MobileViTBlock(48, 64, 128, 1, head_dim=16))
        self.layer_4 = nn.Sequential(MV2Block(48, 64, 2), MobileViTBlock(64, 80, 160, 1, head_dim=20))
        self.conv_1x1_exp = ConvBNAct(64, 128, 1, act=nn.SiLU)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer_2(self.layer_1(self.conv_1(x)))
        x = self.layer_4(self.layer_3(x))
        return self.classifier(self.conv_1x1_exp(x))


# --- 9. EfficientViT B-series (mit-han-lab) -------------------------------------------------------------------------


class EVConvLayer(nn.Module):
    """efficientvit ``ConvLayer``: conv (same padding), optional BN, optional activation, each an attribute."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1, use_bias=False, norm=True, act=nn.Hardswish):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=use_bias)
        self.norm = nn.BatchNorm2d(cout) if norm else None
        self.act = act() if act is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm:
            x = self.norm(x)
        if self.act:
            x = self.act(x)
        return x


class EVLinearLayer(nn.Module):
    def __init__(self, fin: int, fout: int, use_bias=True, norm=False, act: Callable[..., nn.Module] | None = None):
        super().__init__()
        self.linear = nn.Linear(fin, fout, use_bias)
        self.norm = nn.LayerNorm(fout) if norm else None
        self.act = act() if act is not None else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        x = self.linear(x)
        if self.norm:
            x = self.norm(x)
        if self.act:
            x = self.act(x)
        return x


class DSConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.depth_conv = EVConvLayer(cin, cin, 3, stride, groups=cin)
        self.point_conv = EVConvLayer(cin, cout, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        return self.point_conv(self.depth_conv(x))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, expand_ratio: float = 4, fewer_norm: bool = False):
        super().__init__()
        mid = round(cin * expand_ratio)
        # fewer_norm: biased convs without BN for the first two, as EfficientViT does in its attention stages
        self.inverted_conv = EVConvLayer(cin, mid, 1, use_bias=fewer_norm, norm=not fewer_norm)
        self.depth_conv = EVConvLayer(mid, mid, 3, stride, groups=mid, use_bias=fewer_norm, norm=not fewer_norm)
        self.point_conv = EVConvLayer(mid, cout, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class LiteMLA(nn.Module):
    """efficientvit ``LiteMLA``: qkv 1x1, multi-scale depthwise aggregation, ReLU linear attention, proj 1x1 + BN."""

    def __init__(self, cin: int, cout: int, dim: int = 16, scales=(5,), eps: float = 1.0e-15) -> None:
        super().__init__()
        self.eps = eps
        heads = cin // dim
        total_dim = heads * dim
        self.dim = dim
        self.qkv = EVConvLayer(cin, 3 * total_dim, 1, norm=False, act=None)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total_dim, 3 * total_dim, s, padding=s // 2, groups=3 * total_dim, bias=False),
                nn.Conv2d(3 * total_dim, 3 * total_dim, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.kernel_func = nn.ReLU(inplace=False)
        self.proj = EVConvLayer(total_dim * (1 + len(scales)), cout, 1, act=None)

    def _split(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, _, H, W = list(qkv.size())
        qkv = torch.reshape(qkv, (B, -1, 3 * self.dim, H * W))
        return qkv[:, :, 0 : self.dim], qkv[:, :, self.dim : 2 * self.dim], qkv[:, :, 2 * self.dim :]

    def relu_linear_att(self, qkv: Tensor) -> Tensor:
        B, _, H, W = list(qkv.size())
        q, k, v = self._split(qkv)
        q, k = self.kernel_func(q), self.kernel_func(k)
        trans_k = k.transpose(-1, -2)
        v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1)  # the ones row gives the normaliser
        vk = torch.matmul(v, trans_k)
        out = torch.matmul(vk, q)
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return torch.reshape(out, (B, -1, H, W))

    def relu_quadratic_att(self, qkv: Tensor) -> Tensor:
        B, _, H, W = list(qkv.size())
        q, k, v = self._split(qkv)
        q, k = self.kernel_func(q), self.kernel_func(k)
        att_map = torch.matmul(k.transpose(-1, -2), q)  # b h n n
        att_map = att_map / (torch.sum(att_map, dim=2, keepdim=True) + self.eps)
        out = torch.matmul(v, att_map)
        return torch.reshape(out, (B, -1, H, W))

    def forward(self, x: Tensor) -> Tensor:
        qkv = self.qkv(x)
        multi_scale_qkv = [qkv]
        for op in self.aggreg:
            multi_scale_qkv.append(op(qkv))
        qkv = torch.cat(multi_scale_qkv, dim=1)
        H, W = list(qkv.size())[-2:]
        out = self.relu_linear_att(qkv) if H * W > self.dim else self.relu_quadratic_att(qkv)
        return self.proj(out)


class ResidualBlock(nn.Module):
    def __init__(self, main: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        if self.shortcut is None:
            return self.main(x)
        return self.main(x) + self.shortcut(x)


class EfficientViTBlock(nn.Module):
    def __init__(self, cin: int, dim: int = 16, expand_ratio: float = 4) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(cin, cin, dim=dim), nn.Identity())
        self.local_module = ResidualBlock(MBConv(cin, cin, 1, expand_ratio, fewer_norm=True), nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return self.local_module(self.context_module(x))


class EfficientViTLike(nn.Module):
    """EfficientViT-B (mit-han-lab/efficientvit efficientvit/models/nn/ops.py): MBConv + LiteMLA linear attention."""

    def __init__(self, num_classes: int = 10, width_list=(8, 16, 32, 64), depth_list=(1, 1, 1, 1), dim=16) -> None:
        super().__init__()
        self.input_stem = nn.Sequential(
            EVConvLayer(3, width_list[0], 3, 2),
            *[ResidualBlock(DSConv(width_list[0], width_list[0]), nn.Identity()) for _ in range(depth_list[0])],
        )
        cin = width_list[0]
        stages: list[nn.Module] = []
        for w, d in zip(width_list[1:2], depth_list[1:2]):  # local stage: MBConv only
            blocks = []
            for i in range(d):
                stride = 2 if i == 0 else 1
                blocks.append(ResidualBlock(MBConv(cin, w, stride), nn.Identity() if stride == 1 else None))
                cin = w
            stages.append(nn.Sequential(*blocks))
        for w, d in zip(width_list[2:], depth_list[2:]):  # attention stages
            blocks = [ResidualBlock(MBConv(cin, w, 2, fewer_norm=True), None)]
            cin = w
            blocks += [EfficientViTBlock(cin, dim=dim) for _ in range(d)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            EVConvLayer(cin, 128, 1),
            nn.AdaptiveAvgPool2d(output_size=1),
            EVLinearLayer(128, 160, use_bias=False, norm=True, act=nn.Hardswish),
            EVLinearLayer(160, num_classes, use_bias=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


# --- 10. LeViT (facebookresearch) -----------------------------------------------------------------------------------


class ConvNorm(nn.Sequential):
    """LeViT ``Conv2d_BN``: a Sequential holding ``c`` (bias-free conv) and ``bn``."""

    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))


class LinearNorm(nn.Sequential):
    """LeViT ``Linear_BN``: ``c`` (Linear, no bias) then BatchNorm1d over the flattened (B*N, C) tokens."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.add_module("c", nn.Linear(a, b, bias=False))
        self.add_module("bn", nn.BatchNorm1d(b))

    def forward(self, x: Tensor) -> Tensor:
        linear, bn = self._modules.values()
        x = linear(x)
        return bn(x.flatten(0, 1)).reshape_as(x)


class BNLinear(nn.Sequential):
    """LeViT ``BN_Linear`` classifier: BatchNorm1d then Linear."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(a))
        self.add_module("l", nn.Linear(a, b))


class LeViTResidual(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return x + self.m(x)


def _levit_bias_idxs(points_q, points_k, stride: int) -> tuple[int, Tensor]:
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points_q:
        for p2 in points_k:
            offset = (abs(p1[0] * stride - p2[0]), abs(p1[1] * stride - p2[1]))
            if offset not in offsets:
                offsets[offset] = len(offsets)
            idxs.append(offsets[offset])
    return len(offsets), torch.LongTensor(idxs).view(len(points_q), len(points_k))


class _LeViTBiasCache(nn.Module):
    """LeViT's trick: in eval mode ``self.ab`` caches ``attention_biases[:, attention_bias_idxs]`` (set by train())."""

    attention_biases: nn.Parameter
    attention_bias_idxs: Tensor

    @torch.no_grad()
    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            if hasattr(self, "ab"):
                del self.ab
        else:
            self.ab = self.attention_biases[:, self.attention_bias_idxs]
        return self

    def _biases(self) -> Tensor:
        return self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab


class LeViTAttention(_LeViTBiasCache):
    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.qkv = LinearNorm(dim, self.dh + self.nh_kd * 2)
        self.proj = nn.Sequential(nn.Hardswish(), LinearNorm(self.dh, dim))
        points = list(itertools.product(range(resolution), range(resolution)))
        n_offsets, idxs = _levit_bias_idxs(points, points, 1)
        self.attention_biases = nn.Parameter(torch.randn(num_heads, n_offsets) * 0.02)
        self.register_buffer("attention_bias_idxs", idxs)

    def forward(self, x: Tensor) -> Tensor:  # x (B, N, C)
        B, N, C = x.shape
        qkv = self.qkv(x)
        q, k, v = qkv.view(B, N, self.num_heads, -1).split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self._biases()
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.dh)
        return self.proj(x)


class Subsample(nn.Module):
    def __init__(self, stride: int, resolution: int) -> None:
        super().__init__()
        self.stride = stride
        self.resolution = resolution

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        return x.view(B, self.resolution, self.resolution, C)[:, :: self.stride, :: self.stride].reshape(B, -1, C)


class LeViTAttentionSubsample(_LeViTBiasCache):
    def __init__(self, in_dim, out_dim, key_dim, num_heads, attn_ratio, stride, resolution, resolution_) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.resolution_2 = resolution_**2
        self.kv = LinearNorm(in_dim, self.dh + self.nh_kd)
        self.q = nn.Sequential(Subsample(stride, resolution), LinearNorm(in_dim, self.nh_kd))
        self.proj = nn.Sequential(nn.Hardswish(), LinearNorm(self.dh, out_dim))
        points = list(itertools.product(range(resolution), range(resolution)))
        points_ = list(itertools.product(range(resolution_), range(resolution_)))
        n_offsets, idxs = _levit_bias_idxs(points_, points, stride)
        self.attention_biases = nn.Parameter(torch.randn(num_heads, n_offsets) * 0.02)
        self.register_buffer("attention_bias_idxs", idxs)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        k, v = self.kv(x).view(B, N, self.num_heads, -1).split([self.key_dim, self.d], dim=3)
        k, v = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        q = self.q(x).view(B, self.resolution_2, self.num_heads, self.key_dim).permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self._biases()
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, -1, self.dh)
        return self.proj(x)


class LeViTLike(nn.Module):
    """LeViT (facebookresearch/LeViT levit.py): attention_biases indexed by a fixed-resolution buffer, LinearNorm.

    Needs inputs of exactly ``resolution`` x ``resolution`` (default 64): the bias index buffers and the query
    subsampling are built for that size. ``head`` and ``head_dist`` are averaged in both modes (timm's default,
    ``distilled_training=False``; LeViT's own code returns the pair in train mode). Eval mode reads the cached
    ``ab`` tensor that ``train(False)`` computes, as LeViT does: call ``.eval()`` again after pruning heads.
    """

    def __init__(
        self,
        num_classes: int = 10,
        resolution: int = 64,
        embed_dim=(32, 64),
        key_dim: int = 8,
        depth=(1, 1),
        num_heads=(2, 4),
        distillation: bool = True,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.distillation = distillation
        self.distilled_training = False
        n = embed_dim[0]
        self.patch_embed = nn.Sequential(
            ConvNorm(3, n // 4, 3, 2, 1),
            nn.Hardswish(),
            ConvNorm(n // 4, n // 2, 3, 2, 1),
            nn.Hardswish(),
            ConvNorm(n // 2, n, 3, 2, 1),
        )
        res = resolution // 8
        blocks: list[nn.Module] = []
        for i, (ed, dpth, nh) in enumerate(zip(embed_dim, depth, num_heads)):
            for _ in range(dpth):
                blocks.append(LeViTResidual(LeViTAttention(ed, key_dim, nh, attn_ratio=2, resolution=res)))
                blocks.append(
                    LeViTResidual(nn.Sequential(LinearNorm(ed, ed * 2), nn.Hardswish(), LinearNorm(ed * 2, ed)))
                )
            if i < len(embed_dim) - 1:  # ('Subsample', key_dim, heads, attn_ratio=4, mlp_ratio=2, stride=2)
                res_ = (res - 1) // 2 + 1
                out = embed_dim[i + 1]
                blocks.append(LeViTAttentionSubsample(ed, out, key_dim, ed // key_dim, 4, 2, res, res_))
                res = res_
                blocks.append(
                    LeViTResidual(nn.Sequential(LinearNorm(out, out * 2), nn.Hardswish(), LinearNorm(out * 2, out)))
                )
        self.blocks = nn.Sequential(*blocks)
        self.head = BNLinear(embed_dim[-1], num_classes)
        if distillation:
            self.head_dist = BNLinear(embed_dim[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = x.flatten(2).transpose(1, 2)
        x = self.blocks(x)
        x = x.mean(1)
        if not self.distillation:
            return self.head(x)
        x, x_dist = self.head(x), self.head_dist(x)
        if self.training and self.distilled_training:
            return x, x_dist  # type: ignore[return-value]
        return (x + x_dist) / 2


# --- 11. StarNet (ma-xu) --------------------------------------------------------------------------------------------


class StarConvBN(nn.Sequential):
    """StarNet ``ConvBN``: a biased conv, then an optional BN."""

    def __init__(self, cin, cout, kernel_size=1, stride=1, padding=0, groups=1, with_bn=True) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups))
        if with_bn:
            self.add_module("bn", nn.BatchNorm2d(cout))


class StarBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 3) -> None:
        super().__init__()
        self.dwconv = StarConvBN(dim, dim, 7, 1, 3, groups=dim, with_bn=True)
        self.f1 = StarConvBN(dim, mlp_ratio * dim, 1, with_bn=False)
        self.f2 = StarConvBN(dim, mlp_ratio * dim, 1, with_bn=False)
        self.g = StarConvBN(mlp_ratio * dim, dim, 1, with_bn=True)
        self.dwconv2 = StarConvBN(dim, dim, 7, 1, 3, groups=dim, with_bn=False)
        self.act = nn.ReLU6()
        self.drop_path = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        input = x
        x = self.dwconv(x)
        x1, x2 = self.f1(x), self.f2(x)
        x = self.act(x1) * x2
        x = self.dwconv2(self.g(x))
        return input + self.drop_path(x)


class StarNetLike(nn.Module):
    """StarNet (ma-xu/Rewrite-the-Stars imagenet/starnet.py): ``act(f1(x)) * f2(x)`` star product, dw 7x7, residual."""

    def __init__(self, num_classes: int = 10, base_dim: int = 12, depths=(1, 1, 2, 1), mlp_ratio: int = 3) -> None:
        super().__init__()
        self.in_channel = 16
        self.stem = nn.Sequential(StarConvBN(3, self.in_channel, 3, 2, 1), nn.ReLU6())
        self.stages = nn.ModuleList()
        for i_layer, depth in enumerate(depths):
            embed_dim = base_dim * 2**i_layer
            down_sampler = StarConvBN(self.in_channel, embed_dim, 3, 2, 1)
            self.in_channel = embed_dim
            blocks = [StarBlock(self.in_channel, mlp_ratio) for _ in range(depth)]
            self.stages.append(nn.Sequential(down_sampler, *blocks))
        self.norm = nn.BatchNorm2d(self.in_channel)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.in_channel, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = torch.flatten(self.avgpool(self.norm(x)), 1)
        return self.head(x)


# --- 12. MobileNetV4 multi-query attention (timm) -------------------------------------------------------------------


class MultiQueryAttention2d(nn.Module):
    """timm ``MultiQueryAttention2d``: ``heads`` query heads, ONE key/value head, kv downsampled by a dw conv."""

    def __init__(self, dim: int, num_heads: int = 4, key_dim: int = 16, value_dim: int = 16, kv_stride: int = 2):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.scale = key_dim**-0.5
        self.query = nn.Sequential()
        self.query.add_module("proj", nn.Conv2d(dim, num_heads * key_dim, 1, bias=False))
        self.key = nn.Sequential()
        self.value = nn.Sequential()
        for seq, out in ((self.key, key_dim), (self.value, value_dim)):
            if kv_stride > 1:
                seq.add_module("down_conv", nn.Conv2d(dim, dim, 3, kv_stride, 1, groups=dim, bias=False))
                seq.add_module("norm", nn.BatchNorm2d(dim))
            seq.add_module("proj", nn.Conv2d(dim, out, 1, bias=False))
        self.output = nn.Sequential()
        self.output.add_module("proj", nn.Conv2d(value_dim * num_heads, dim, 1, bias=False))
        self.output.add_module("drop", nn.Dropout(0.0))

    @staticmethod
    def _reshape_input(t: Tensor) -> Tensor:
        s = t.shape
        return t.reshape(s[0], s[1], -1).transpose(1, 2).unsqueeze(1).contiguous()  # [b, 1, m*m, k]

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q = self.query(x)
        q = q.reshape(B, self.num_heads, self.key_dim, -1).transpose(-1, -2).contiguous()  # [b, h, n*n, k]
        k = self._reshape_input(self.key(x))
        v = self._reshape_input(self.value(x))
        q = q * self.scale
        attn = q @ k.transpose(-1, -2)  # the single kv head broadcasts over the query heads
        attn = attn.softmax(dim=-1)
        o = attn @ v  # [b, h, n*n, v]
        o = o.transpose(1, 2).reshape(B, H, W, self.num_heads * self.value_dim).permute(0, 3, 1, 2).contiguous()
        return self.output(o)


class LayerScale2d(nn.Module):
    def __init__(self, dim: int, init_values: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class MobileAttention(nn.Module):
    """timm ``MobileAttention`` (MobileNetV4 hybrid): BN, MQA, layer scale, residual add."""

    def __init__(self, dim: int, num_heads: int = 4, key_dim: int = 16, value_dim: int = 16, kv_stride: int = 2):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.attn = MultiQueryAttention2d(dim, num_heads, key_dim, value_dim, kv_stride)
        self.layer_scale = LayerScale2d(dim)
        self.drop_path = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.layer_scale(self.attn(self.norm(x)))
        return self.drop_path(x) + shortcut


class IRBlock(nn.Module):
    """An EfficientNet/MobileNetV4 inverted residual: 1x1 expand, dw 3x3, 1x1 project, add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.conv_pw = ConvBNAct(cin, mid, 1)
        self.conv_dw = ConvBNAct(mid, mid, 3, stride, groups=mid)
        self.conv_pwl = ConvBNAct(mid, cout, 1, act=None)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_pwl(self.conv_dw(self.conv_pw(x)))
        return x + shortcut if self.has_skip else x


class MultiQueryAttnNet(nn.Module):
    """MobileNetV4-hybrid MQA (huggingface/pytorch-image-models timm/layers/attention2d.py): 4 q heads, 1 kv head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_stem = ConvBNAct(3, 16, 3, 2)
        self.blocks = nn.Sequential(
            IRBlock(16, 24, 2),
            IRBlock(24, 48, 2),
            IRBlock(48, 64, 2),
            MobileAttention(64, num_heads=4, key_dim=16, value_dim=16, kv_stride=2),
            IRBlock(64, 64, 1, expand=2),
        )
        self.conv_head = ConvBNAct(64, 128, 1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_head(self.blocks(self.conv_stem(x)))
        return self.classifier(self.global_pool(x).flatten(1))


# --- registry -------------------------------------------------------------------------------------------------------

PATTERNS: dict[str, Callable[..., nn.Module]] = {
    "resnet_basic": ResNetBasic,
    "mobilenet_v3": MobileNetV3Like,
    "shufflenet_v2": ShuffleNetV2Like,
    "ghostnet": GhostNetLike,
    "regnet_y": RegNetYLike,
    "hier_vit": HierViT,
    "swin": SwinLike,
    "mobilevit": MobileViTLike,
    "efficientvit": EfficientViTLike,
    "levit": LeViTLike,
    "starnet": StarNetLike,
    "mqa": MultiQueryAttnNet,
}
"""Short name -> network class; each builds with no arguments (``num_classes=10``)."""

INPUT_SIZE: dict[str, int | None] = {name: None for name in PATTERNS}
"""The square input size a network requires, where it is fixed; None where any size (64 and 224 tested) works."""
INPUT_SIZE["levit"] = 64
