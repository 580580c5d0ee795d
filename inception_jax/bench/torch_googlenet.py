"""The PyTorch peer: torchvision's `googlenet`, or the same network written in PyTorch.

`mirror(model)` builds, in PyTorch, the network that one of our resolved `GoogLeNet` modules
describes (BatchNorm presets only): for the `torchvision` preset at 224x224 that is torchvision's
googlenet layer for layer (bias-free convs + BatchNorm + ReLU, ceil-mode max pools, 3x3 in the
"5x5" branch, 2x2 last pool, aux heads pooled adaptively to 4x4, dropout 0.2; 13,004,888
parameters with the aux heads), and for the small-image stem or a narrower width the same
network with that change, which torchvision has no option for. `peer(model, preset)` prefers
torchvision's own model where it is that network and torchvision imports; torchvision's wheel is
built against CUDA and fails to import on a CPU-only torch, and then the mirror stands in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from inception_jax.models.branch import Conv
from inception_jax.models.googlenet import GoogLeNet, stage_of


class _ConvUnit(nn.Sequential):
  def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int, eps: float):
    super().__init__(
        nn.Conv2d(channels_in, channels_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(channels_out, eps=eps), nn.ReLU(inplace=True))


class _Inception(nn.Module):
  def __init__(self, channels_in: int, branches, eps: float):
    super().__init__()
    self.branches = nn.ModuleList()
    self.channels_out = 0
    for spec in branches:
      layers, channels = [], channels_in
      for step in spec:
        if isinstance(step, Conv):
          layers.append(_ConvUnit(channels, step.features, step.kernel, 1, eps))
          channels = step.features
        else:
          layers.append(nn.MaxPool2d(step.window, 1, step.window // 2, ceil_mode=True))
      self.branches.append(nn.Sequential(*layers))
      self.channels_out += channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([branch(x) for branch in self.branches], 1)


class _AuxHead(nn.Module):
  def __init__(self, channels_in: int, conv_features: int, hidden: int, num_classes: int,
               dropout: float, eps: float):
    super().__init__()
    self.conv = _ConvUnit(channels_in, conv_features, 1, 1, eps)
    self.fc1, self.fc2 = nn.Linear(16 * conv_features, hidden), nn.Linear(hidden, num_classes)
    self.dropout = dropout

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
    return self.fc2(F.dropout(F.relu(self.fc1(x), inplace=True), self.dropout, self.training))


class MirrorGoogLeNet(nn.Module):
  """One of our GoogLeNets in PyTorch (NCHW); train mode returns (logits, *aux logits)."""

  def __init__(self, model: GoogLeNet):
    super().__init__()
    if model.lrn or not model.batchnorm or model.aux_pool != "adaptive":
      raise ValueError("the PyTorch mirror covers BatchNorm networks with adaptive aux pooling "
                       "(the torchvision preset and its variants).")
    eps = model.bn_epsilon
    c1, c2_reduce, c2 = model.stem_widths
    stem: list[nn.Module] = [_ConvUnit(3, c1, model.stem.kernel, model.stem.strides, eps)]
    if model.stem.pools:
      stem.append(nn.MaxPool2d(3, 2, ceil_mode=True))
    stem += [_ConvUnit(c1, c2_reduce, 1, 1, eps), _ConvUnit(c2_reduce, c2, 3, 1, eps)]
    if model.stem.pools:
      stem.append(nn.MaxPool2d(3, 2, ceil_mode=True))
    self.stem = nn.Sequential(*stem)

    self.layers = nn.ModuleList()
    self.aux = nn.ModuleDict()
    self.aux_after: list[str | None] = []
    channels, pools, previous = c2, iter(model.stage_pools), None
    for name, branches in model.inception:
      if previous and stage_of(name) != stage_of(previous):
        window = next(pools)
        self.layers.append(nn.MaxPool2d(window, 2, ceil_mode=True))
        self.aux_after.append(None)
      module = _Inception(channels, branches, eps)
      channels = module.channels_out
      self.layers.append(module)
      self.aux_after.append(name if name in model.aux_from else None)
      if name in model.aux_from:
        self.aux[name] = _AuxHead(channels, *model.aux_widths, model.num_classes,
                                  model.aux_dropout, eps)
      previous = name
    self.dropout = model.dropout
    self.fc = nn.Linear(channels, model.num_classes)

  def forward(self, x: torch.Tensor) -> Any:
    x = self.stem(x)
    aux_logits = []
    for layer, aux_name in zip(self.layers, self.aux_after):
      x = layer(x)
      if aux_name is not None and self.training:
        aux_logits.append(self.aux[aux_name](x))
    x = F.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), self.dropout, self.training)
    x = self.fc(x)
    return (x, *aux_logits) if self.training else x


def peer(model: GoogLeNet, use_torchvision: bool) -> tuple[nn.Module, str]:
  """The PyTorch network to time against `model`, and what it is.

  With `use_torchvision` (the model is the torchvision preset), torchvision's own googlenet where
  torchvision imports; otherwise, and as the fallback, the mirror.
  """
  mirror_note = "our PyTorch mirror of this network"
  if use_torchvision:
    try:
      from torchvision.models import googlenet  # pylint: disable=import-outside-toplevel
    except Exception as error:  # pylint: disable=broad-except  # CPU torch: ops fail to register
      mirror_note = (f"our PyTorch mirror of torchvision's googlenet (torchvision did not "
                     f"import: {type(error).__name__})")
    else:
      return (googlenet(weights=None, aux_logits=True, init_weights=False,
                        num_classes=model.num_classes), "torchvision.models.googlenet")
  return MirrorGoogLeNet(model), mirror_note


def parameter_count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())
