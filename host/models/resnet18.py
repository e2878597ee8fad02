"""ResNet-18 (He et al., 2016) from ``torch.nn``, for offloading to the accelerator.

The architecture and module names are torchvision's ``resnet18`` (v1.5: the
first block of a stage strides in its 3x3 conv) with the true channel counts::

    conv1    3 -> 64, 7x7, stride 2, pad 3      + bn1 + relu
    maxpool  3x3, stride 2, pad 1
    layer1   2 BasicBlocks,  64 channels, stride 1
    layer2   2 BasicBlocks, 128 channels, stride 2 (1x1 stride-2 downsample conv)
    layer3   2 BasicBlocks, 256 channels, stride 2 (  "  )
    layer4   2 BasicBlocks, 512 channels, stride 2 (  "  )
    avgpool  global average, flatten, fc 512 -> num_classes

20 ``nn.Conv2d`` layers (stem, 16 block convs, 3 downsample convs), 11.7 M
parameters. The network is fully convolutional up to the global pooling, so
the input size is free: at 224x224 the stages run at 56/28/14/7, at 32x32 at
8/4/2/1 -- the same layers (channels, kernels, strides) on smaller images.

**No pretrained weights** are available offline, so the weights are random
and deterministic: Kaiming-normal convolutions (``fan_out``, ReLU gain) and a
uniform ``fc`` as torchvision initializes them, drawn from a ``torch.Generator``
seeded with ``seed`` (the global RNG is not touched). BatchNorm affine
parameters stay at their init (``gamma = 1``, ``beta = 0``); its running
statistics are then **measured on a calibration pass** over synthetic images
(:func:`synthetic_images`: smooth random fields, standardized per channel,
like normalized photos) at the chosen input size, so that every layer sees
normalized activations as in a trained network. Finally BatchNorm is folded
into the convolutions (:func:`~systolic_conv.fold_batchnorm`, explicit
conv/BN pairs since the blocks are not ``nn.Sequential``). The logits are
meaningless as classes; the model exists to exercise the real layer shapes.

:func:`inference_model` does all of this; it is deterministic (one torch thread
during the calibration pass).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ResNet18", "build_model", "synthetic_images", "calibrate_batchnorm",
           "bn_pairs", "conv_layer_names", "inference_model", "STAGES"]

#: ``(channels, stride)`` of the four stages.
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual connection.

    Parameters
    ----------
    in_channels, channels : int
        Input and output channels.
    stride : int
        Stride of the first conv; when it is not 1 or the channel count
        changes, the shortcut is ``downsample = Sequential(1x1 conv with
        stride, BatchNorm)``.
    """

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels))

    def forward(self, x):
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 with torchvision's module names (see the module docstring).

    Parameters
    ----------
    num_classes : int
        Outputs of ``fc``.
    in_channels : int
        Image channels.
    """

    def __init__(self, num_classes=1000, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c = 64
        for i, (channels, stride) in enumerate(STAGES, 1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c, channels, stride),
                                                     BasicBlock(channels, channels)))
            c = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def features(self, x):
        """The conv stack: ``(N, 3, H, W)`` -> ``(N, 512, H/32, W/32)`` (rounded up)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        """Logits ``(N, num_classes)``."""
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def build_model(seed=0, num_classes=1000):
    """A ResNet-18 with deterministic random weights, BatchNorm not calibrated.

    Parameters
    ----------
    seed : int
        Seed of the ``torch.Generator`` drawing the weights.
    num_classes : int
        Outputs of ``fc``.

    Returns
    -------
    ResNet18
        In eval mode; BatchNorm running statistics at their defaults (0 / 1).
    """
    model = ResNet18(num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                        generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound, generator=g)
                nn.init.uniform_(m.bias, -bound, bound, generator=g)
    return model.eval()


def synthetic_images(n, size, seed=0, channels=3):
    """Smooth random images standing in for normalized photos.

    Each channel is a bilinearly upsampled coarse Gaussian field (a quarter of
    the side) shared in part across channels (correlated colours), plus 25 %
    pixel noise, then standardized per image and channel (mean 0, std 1).

    Parameters
    ----------
    n : int
        Images.
    size : int or (int, int)
        Height and width.
    seed : int
        Seed of ``numpy.random.default_rng``.
    channels : int

    Returns
    -------
    torch.Tensor
        ``(n, channels, H, W)`` float32.
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if n < 1 or h < 1 or w < 1:
        raise ValueError(f"n={n} and size={size!r} must be positive")
    rng = np.random.default_rng(seed)
    ch, cw = max(2, -(-h // 4)), max(2, -(-w // 4))
    shared = rng.standard_normal((n, 1, ch, cw))
    coarse = 0.7 * shared + 0.7 * rng.standard_normal((n, channels, ch, cw))
    x = F.interpolate(torch.from_numpy(coarse), size=(h, w), mode="bilinear",
                      align_corners=False).numpy()
    x = x + 0.25 * rng.standard_normal(x.shape)
    x = x - x.mean(axis=(2, 3), keepdims=True)
    x = x / np.maximum(x.std(axis=(2, 3), keepdims=True), 1e-6)
    return torch.from_numpy(x.astype(np.float32))


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def calibrate_batchnorm(model, images, batch_size=None):
    """Set every BatchNorm's running statistics from a pass over ``images``.

    The statistics are reset, then accumulated as the plain average over the
    batches (``momentum=None``) in training mode; the model is left in eval
    mode with the original momenta. Only BatchNorm buffers change.

    Parameters
    ----------
    model : torch.nn.Module
    images : torch.Tensor
        ``(N, C, H, W)`` inputs, ``N >= 2``.
    batch_size : int, optional
        Images per forward pass (default: all at once).

    Returns
    -------
    torch.nn.Module
        ``model``.
    """
    if images.shape[0] < 2:
        raise ValueError("BatchNorm calibration needs at least 2 images")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    bs = batch_size or images.shape[0]
    model.train()
    try:
        with torch.no_grad(), _one_thread():
            for i in range(0, images.shape[0], bs):
                model(images[i:i + bs])
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()
    return model


def bn_pairs(model):
    """``(conv, batchnorm)`` qualified names of a :class:`ResNet18` for folding.

    Parameters
    ----------
    model : ResNet18

    Returns
    -------
    list of (str, str)
        The stem, both convs of every block and every downsample, in model order.
    """
    pairs = [("conv1", "bn1")]
    for i in range(1, len(STAGES) + 1):
        for j, block in enumerate(getattr(model, f"layer{i}")):
            p = f"layer{i}.{j}"
            pairs += [(f"{p}.conv1", f"{p}.bn1"), (f"{p}.conv2", f"{p}.bn2")]
            if block.downsample is not None:
                pairs.append((f"{p}.downsample.0", f"{p}.downsample.1"))
    return pairs


def conv_layer_names(model):
    """Qualified names of the ``nn.Conv2d`` layers, in execution order.

    Returns
    -------
    list of str
        20 names for ResNet-18 (a block's downsample after its two convs, as
        :meth:`BasicBlock.forward` runs them).
    """
    return [c for c, _ in bn_pairs(model)]


def inference_model(size=32, seed=0, bn_images=32, num_classes=1000):
    """The ResNet-18 of this module, ready for :func:`systolic_conv.offload`.

    Random weights from ``seed`` (:func:`build_model`), BatchNorm statistics
    from ``bn_images`` images ``synthetic_images(bn_images, size, seed=seed + 1)``
    (:func:`calibrate_batchnorm`), BatchNorm folded; eval mode.

    Parameters
    ----------
    size : int or (int, int)
        Input size the BatchNorm statistics are measured at (the model accepts
        any size; use the size it will run at).
    seed : int
    bn_images : int
        Calibration images for the BatchNorm statistics (>= 2).
    num_classes : int

    Returns
    -------
    ResNet18
        With ``nn.Identity`` in place of every BatchNorm and biased convs.
    """
    from ..torch_offload import fold_batchnorm
    model = build_model(seed, num_classes)
    calibrate_batchnorm(model, synthetic_images(bn_images, size, seed=seed + 1))
    return fold_batchnorm(model, pairs=bn_pairs(model), inplace=True).eval()
