"""A small CNN for scikit-learn's bundled ``load_digits`` (no download).

The 8x8 digit images (pixel values 0..16) are scaled to ``[0, 1]`` and
upsampled bilinearly to 16x16 (``F.interpolate``, ``align_corners=False``):
at 8x8 a 3x3 convolution sees most of the image at once and a dilated one
little more than the border, at 16x16 the layers have spatial work to do
(and the accelerator real rows to stream). The split is fixed: 25 % test,
stratified, ``random_state=0`` (1347 training and 450 test images).

Architecture (:func:`build_model`, an ``nn.Sequential`` with named children)::

    conv1  1 -> 8,  3x3, padding 1             16x16   + bn1 + relu1
    dw     8 -> 8,  3x3, padding 1, groups 8   16x16   + bn2 + relu2   (depthwise)
    pw     8 -> 16, 1x1                        16x16   + bn3 + relu3   (pointwise)
    pool   max 2x2                             8x8
    dil    16 -> 32, 3x3, dilation 2, pad 2    8x8     + bn4 + relu4   (dilated)
    down   32 -> 32, 3x3, stride 2, pad 1      4x4     + bn5 + relu5
    gap    global average pool, flatten, fc 32 -> 10

Training (:func:`train`) is deterministic: seeded, CPU, one thread, float32, Adam,
a fixed number of epochs over fixed mini-batches. :func:`pretrained` caches
the trained weights (BatchNorm unfolded, as trained) in
``build/models/digits-<key>.npz`` (``$SYSTOLIC_CONV_BUILD`` overrides
``build/``); the key hashes the training recipe and the torch version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RECIPE", "load_data", "build_model", "train", "pretrained", "accuracy",
           "cache_path"]

#: The training recipe; every field is part of the cache key.
RECIPE = dict(size=16, test_size=0.25, split_seed=0, torch_seed=0, epochs=12,
              batch_size=32, lr=3e-3, weight_decay=1e-4, widths=(8, 16, 32, 32))


def load_data(size=RECIPE["size"], test_size=RECIPE["test_size"], seed=RECIPE["split_seed"]):
    """The digits data set, scaled to ``[0, 1]``, upsampled, and split.

    Parameters
    ----------
    size : int
        Side of the (square) images after bilinear upsampling; 8 keeps them.
    test_size : float
        Fraction held out, stratified by label.
    seed : int
        ``random_state`` of ``train_test_split``.

    Returns
    -------
    x_train, y_train, x_test, y_test : torch.Tensor
        Images ``(N, 1, size, size)`` float32, labels int64.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=d.target)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    return x[tr].contiguous(), y[tr], x[te].contiguous(), y[te]


def build_model(widths=RECIPE["widths"]):
    """The CNN of this module, untrained, with BatchNorm (see the module docstring).

    Parameters
    ----------
    widths : tuple of 4 int
        Channels of conv1/dw, pw, dil, down.

    Returns
    -------
    torch.nn.Sequential
    """
    c1, c2, c3, c4 = widths
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, c1, 3, padding=1, bias=False)),
        ("bn1", nn.BatchNorm2d(c1)), ("relu1", nn.ReLU()),
        ("dw", nn.Conv2d(c1, c1, 3, padding=1, groups=c1, bias=False)),
        ("bn2", nn.BatchNorm2d(c1)), ("relu2", nn.ReLU()),
        ("pw", nn.Conv2d(c1, c2, 1, bias=False)),
        ("bn3", nn.BatchNorm2d(c2)), ("relu3", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)),
        ("dil", nn.Conv2d(c2, c3, 3, padding=2, dilation=2, bias=False)),
        ("bn4", nn.BatchNorm2d(c3)), ("relu4", nn.ReLU()),
        ("down", nn.Conv2d(c3, c4, 3, stride=2, padding=1, bias=False)),
        ("bn5", nn.BatchNorm2d(c4)), ("relu5", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(c4, 10)),
    ]))


@contextlib.contextmanager
def _deterministic(seed):
    """Seeded RNG, deterministic kernels and one thread; restored on exit.

    One intra-op thread: the layers are tiny, and on a loaded 2-core machine
    two threads spin against each other (10-50x slower per step).
    """
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    state = torch.random.get_rng_state()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


def train(recipe=None, data=None, verbose=False):
    """Train :func:`build_model` on the training split, deterministically.

    Parameters
    ----------
    recipe : dict, optional
        Overrides of :data:`RECIPE`.
    data : tuple, optional
        ``load_data(...)`` output (loaded from ``recipe`` when omitted).
    verbose : bool
        Print the loss per epoch.

    Returns
    -------
    torch.nn.Sequential
        The trained model (BatchNorm not folded), in eval mode.
    """
    r = dict(RECIPE, **(recipe or {}))
    x_tr, y_tr, _, _ = data if data is not None else load_data(r["size"], r["test_size"],
                                                               r["split_seed"])
    with _deterministic(r["torch_seed"]):
        model = build_model(tuple(r["widths"]))
        opt = torch.optim.Adam(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r["epochs"])
        gen = torch.Generator().manual_seed(r["torch_seed"])
        model.train()
        for epoch in range(r["epochs"]):
            perm = torch.randperm(len(y_tr), generator=gen)
            total = 0.0
            for lo in range(0, len(perm), r["batch_size"]):
                idx = perm[lo:lo + r["batch_size"]]
                opt.zero_grad()
                loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            sched.step()
            if verbose:
                print(f"epoch {epoch + 1}/{r['epochs']}: loss {total / len(y_tr):.4f}")
    return model.eval()


def _key(recipe):
    text = json.dumps(dict(recipe, widths=list(recipe["widths"]),
                           torch=torch.__version__.split("+")[0]), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_path(recipe=None):
    """Where :func:`pretrained` caches the weights of ``recipe`` (a ``pathlib.Path``)."""
    from systolic_conv.sim.toolchain import build_root
    r = dict(RECIPE, **(recipe or {}))
    return build_root() / "models" / f"digits-{_key(r)}.npz"


def pretrained(recipe=None, fold=True, retrain=False, verbose=False):
    """The trained digits CNN, from the cache or trained (and cached) on demand.

    Parameters
    ----------
    recipe : dict, optional
        Overrides of :data:`RECIPE`.
    fold : bool
        Fold the BatchNorm layers into the convolutions
        (:func:`systolic_conv.fold_batchnorm`); the BatchNorm children
        become ``nn.Identity``.
    retrain : bool
        Ignore (and overwrite) a cached file.
    verbose : bool
        Print training progress.

    Returns
    -------
    torch.nn.Sequential
        In eval mode.
    """
    from systolic_conv.sim.toolchain import file_lock
    r = dict(RECIPE, **(recipe or {}))
    path = cache_path(r)
    with file_lock(path.with_suffix(".lock")):
        if path.exists() and not retrain:
            model = build_model(tuple(r["widths"]))
            with np.load(path) as z:
                state = {k: torch.from_numpy(z[k]) for k in z.files}
            model.load_state_dict(state)
            model.eval()
        else:
            model = train(r, verbose=verbose)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
            tmp.replace(path)
    if fold:
        from systolic_conv.torch_offload import fold_batchnorm
        model = fold_batchnorm(model, inplace=True)
    return model


def accuracy(model, x, y, batch_size=None):
    """Top-1 accuracy of ``model`` (any callable returning logits) on ``(x, y)``.

    Parameters
    ----------
    model : callable
    x, y : torch.Tensor
    batch_size : int, optional
        Evaluate in chunks of this many images (all at once by default).

    Returns
    -------
    float
        Fraction correct.
    """
    n = len(y)
    bs = batch_size or n
    correct = 0
    with torch.no_grad():
        for lo in range(0, n, bs):
            correct += int((model(x[lo:lo + bs]).argmax(1) == y[lo:lo + bs]).sum())
    return correct / n if n else 0.0
