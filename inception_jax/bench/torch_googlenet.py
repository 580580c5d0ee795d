"""The PyTorch peer: torchvision's `googlenet`, or the same network written in PyTorch.

`MirrorGoogLeNet(model)` builds, in PyTorch and with torchvision's module names, the network
that one of our resolved `GoogLeNet` modules describes (BatchNorm presets only): for the
`torchvision` preset that is torchvision's googlenet layer for layer and key for key
(bias-free convs + BatchNorm + ReLU, ceil-mode max pools, 3x3 in the "5x5" branch, 2x2 last pool,
aux heads pooled adaptively to 4x4, dropout 0.2; 13,004,888 parameters with the aux heads), and
for the small-image stem or a narrower width the same network with that change, which
torchvision has no option for. The weight-import tests check our port against it.
`peer(model, preset)` prefers torchvision's own model where it is that network and torchvision
imports; torchvision's wheel is built against CUDA and fails to import on a CPU-only torch, and
then the mirror stands in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from inception_jax.models.branch import Conv
from inception_jax.models.googlenet import GoogLeNet, stage_of

# torchvision's ImageNet normalisation, which its transform_input undoes.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BasicConv2d(nn.Module):
  """torchvision's conv unit and its names: a bias-free `conv`, BatchNorm `bn`, ReLU."""

  def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int, eps: float):
    super().__init__()
    self.conv = nn.Conv2d(channels_in, channels_out, kernel, stride, kernel // 2, bias=False)
    self.bn = nn.BatchNorm2d(channels_out, eps=eps)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
  """Branches `branch1`..`branchN`: one step bare, several in an nn.Sequential (torchvision)."""

  def __init__(self, channels_in: int, branches, eps: float):
    super().__init__()
    self.channels_out = 0
    for i, spec in enumerate(branches):
      layers, channels = [], channels_in
      for step in spec:
        if isinstance(step, Conv):
          layers.append(BasicConv2d(channels, step.features, step.kernel, 1, eps))
          channels = step.features
        else:
          layers.append(nn.MaxPool2d(step.window, 1, step.window // 2, ceil_mode=True))
      setattr(self, f"branch{i + 1}", layers[0] if len(layers) == 1 else nn.Sequential(*layers))
      self.channels_out += channels
    self.branches = len(branches)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([getattr(self, f"branch{i + 1}")(x) for i in range(self.branches)], 1)


class InceptionAux(nn.Module):
  """pool to 4x4 -> `conv` -> flatten (channel-major) -> `fc1` + ReLU -> dropout -> `fc2`."""

  def __init__(
    self,
    channels_in: int,
    conv_features: int,
    hidden: int,
    num_classes: int,
    dropout: float,
    eps: float,
  ):
    super().__init__()
    self.conv = BasicConv2d(channels_in, conv_features, 1, 1, eps)
    self.fc1, self.fc2 = nn.Linear(16 * conv_features, hidden), nn.Linear(hidden, num_classes)
    self.dropout = dropout

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
    return self.fc2(F.dropout(F.relu(self.fc1(x), inplace=True), self.dropout, self.training))


class MirrorGoogLeNet(nn.Module):
  """One of our GoogLeNets in PyTorch (NCHW), with torchvision's module names, so that for the
  torchvision preset its state dict has torchvision's keys and shapes. Train mode returns
  (logits, *aux logits), the aux heads in network order (4a's first). `transform_input` is
  torchvision's: ImageNet-normalised input mapped to the [-1, 1] its pretrained weights expect.
  """

  def __init__(self, model: GoogLeNet, transform_input: bool = False):
    super().__init__()
    if model.lrn or not model.batchnorm or model.aux_pool != "adaptive":
      raise ValueError(
        "the PyTorch mirror covers BatchNorm networks with adaptive aux pooling "
        "(the torchvision preset and its variants)."
      )
    eps = model.bn_epsilon
    self.transform_input = transform_input
    c1, c2_reduce, c2 = model.stem_widths
    self.conv1 = BasicConv2d(3, c1, model.stem.kernel, model.stem.strides, eps)
    self.conv2 = BasicConv2d(c1, c2_reduce, 1, 1, eps)
    self.conv3 = BasicConv2d(c2_reduce, c2, 3, 1, eps)
    self.stem_pools = model.stem.pools
    if model.stem.pools:
      self.maxpool1, self.maxpool2 = (nn.MaxPool2d(3, 2, ceil_mode=True) for _ in range(2))

    self.order: list[str] = []  # what runs after the stem, by attribute name
    self.aux_after: dict[str, str] = {}
    channels, pools, previous = c2, iter(model.stage_pools), None
    for name, branches in model.inception:
      if previous and stage_of(name) != stage_of(previous):
        self.order.append(f"maxpool{stage_of(previous)}")
        setattr(self, self.order[-1], nn.MaxPool2d(next(pools), 2, ceil_mode=True))
      module = Inception(channels, branches, eps)
      channels = module.channels_out
      self.order.append(f"inception{name.rsplit('_', 1)[-1]}")
      setattr(self, self.order[-1], module)
      if name in model.aux_from:
        aux = f"aux{len(self.aux_after) + 1}"
        self.aux_after[self.order[-1]] = aux
        setattr(
          self,
          aux,
          InceptionAux(channels, *model.aux_widths, model.num_classes, model.aux_dropout, eps),
        )
      previous = name
    self.dropout = nn.Dropout(model.dropout)
    self.fc = nn.Linear(channels, model.num_classes)

  def forward(self, x: torch.Tensor) -> Any:
    if self.transform_input:  # torchvision's GoogLeNet._transform_input, per channel
      mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
      std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
      x = x * (std / 0.5) + (mean - 0.5) / 0.5
    x = self.conv1(x)
    if self.stem_pools:
      x = self.maxpool1(x)
    x = self.conv3(self.conv2(x))
    if self.stem_pools:
      x = self.maxpool2(x)
    aux_logits = []
    for name in self.order:
      x = getattr(self, name)(x)
      if name in self.aux_after and self.training:
        aux_logits.append(getattr(self, self.aux_after[name])(x))
    x = self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))
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
      mirror_note = (
        f"our PyTorch mirror of torchvision's googlenet (torchvision did not "
        f"import: {type(error).__name__})"
      )
    else:
      return (
        googlenet(weights=None, aux_logits=True, init_weights=False, num_classes=model.num_classes),
        "torchvision.models.googlenet",
      )
  return MirrorGoogLeNet(model), mirror_note


def parameter_count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())
