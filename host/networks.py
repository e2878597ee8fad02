"""Conv layer lists of reference networks, at their true shapes, for estimation.

A network is a list of :class:`LayerSpec` (``torch.nn.Conv2d`` arguments plus the
input size the layer sees). Built in: ``resnet18``, ``mobilenetv2``, ``resnext50``
(ResNeXt-50 32x4d) for a 224x224 ImageNet input (torchvision's layer names and
strides: v1.5 ResNets stride in the 3x3 conv), and ``seed`` (the three layers of
``seeds/nn_conv2d.txt`` on a 20x16x50x100 batch). Layer lists also load from the
JSON format of ``bench/layers.json`` and from a PyTorch model (forward hooks on a
dummy input record every ``nn.Conv2d``'s input shape).
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, asdict

__all__ = ["LayerSpec", "NETWORKS", "network", "load_layers", "layers_from_torch",
           "estimate_layers", "LAYER_SCHEMA", "validate_layer_dict"]


@dataclass
class LayerSpec:
    """One conv2d layer: ``nn.Conv2d`` arguments and its input shape."""
    name: str
    C_in: int
    H: int
    W: int
    C_out: int
    kernel_size: tuple = (3, 3)
    stride: tuple = (1, 1)
    padding: object = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    bias: bool = False
    padding_mode: str = "zeros"
    N: int = 1
    net: str = ""

    def __post_init__(self):
        def pair(v):
            return (int(v), int(v)) if isinstance(v, int) else tuple(int(t) for t in v)
        self.kernel_size = pair(self.kernel_size)
        self.stride = pair(self.stride)
        self.dilation = pair(self.dilation)
        if not isinstance(self.padding, str):
            self.padding = pair(self.padding)

    @property
    def input_shape(self):
        return (self.N, self.C_in, self.H, self.W)

    @property
    def weight_shape(self):
        return (self.C_out, self.C_in // self.groups) + tuple(self.kernel_size)

    def conv_kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode)

    def geometry(self):
        from .contract import conv_geometry
        return conv_geometry(self.input_shape, self.weight_shape,
                             (self.C_out,) if self.bias else None, **self.conv_kwargs())

    def estimate(self, hw=None, **kwargs):
        from .cycle_model import estimate
        return estimate(self.input_shape, self.weight_shape, hw=hw, bias=self.bias,
                        name=self.name, **self.conv_kwargs(), **kwargs)

    def to_dict(self):
        d = asdict(self)
        for k in ("kernel_size", "stride", "dilation"):
            d[k] = list(d[k])
        if not isinstance(self.padding, str):
            d["padding"] = list(self.padding)
        return d

    @classmethod
    def from_dict(cls, d, where="layer"):
        """A layer from a dict checked against :data:`LAYER_SCHEMA` (``name`` required)."""
        validate_layer_dict(d, where)
        if "name" not in d:
            raise ValueError(f"{where}: missing key 'name' (a string)")
        return cls(**d)

    def __str__(self):
        kh, kw = self.kernel_size
        s = f"{self.C_in}x{self.H}x{self.W} -> {self.C_out} k{kh}x{kw}"
        if self.stride != (1, 1):
            s += f" s{self.stride[0]}" + (f"x{self.stride[1]}" if self.stride[0] != self.stride[1]
                                          else "")
        if self.dilation != (1, 1):
            s += f" d{self.dilation[0]}" + (f"x{self.dilation[1]}"
                                            if self.dilation[0] != self.dilation[1] else "")
        if self.groups > 1:
            s += " dw" if self.groups == self.C_in == self.C_out else f" g{self.groups}"
        if self.padding_mode != "zeros":
            s += f" {self.padding_mode}"
        if self.N > 1:
            s = f"{self.N}x" + s
        return s


# ----------------------------------------------------------------------------- networks

def _resnet18():
    L = [LayerSpec("conv1", 3, 224, 224, 64, 7, 2, 3)]
    size, cin = 56, 64
    for li, planes in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            stride = 2 if (li > 1 and b == 0) else 1
            L.append(LayerSpec(f"layer{li}.{b}.conv1", cin, size, size, planes, 3, stride, 1))
            out = size // stride
            L.append(LayerSpec(f"layer{li}.{b}.conv2", planes, out, out, planes, 3, 1, 1))
            if b == 0 and (stride != 1 or cin != planes):
                L.append(LayerSpec(f"layer{li}.{b}.downsample", cin, size, size, planes, 1,
                                   stride, 0))
            cin, size = planes, out
    return L


def _resnext50():
    L = [LayerSpec("conv1", 3, 224, 224, 64, 7, 2, 3)]
    size, cin = 56, 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        width = planes * 2            # planes * (4 / 64) * 32 groups
        for b in range(blocks):
            stride = 2 if (li > 1 and b == 0) else 1
            out = size // stride
            p = f"layer{li}.{b}"
            L.append(LayerSpec(f"{p}.conv1", cin, size, size, width, 1, 1, 0))
            L.append(LayerSpec(f"{p}.conv2", width, size, size, width, 3, stride, 1, groups=32))
            L.append(LayerSpec(f"{p}.conv3", width, out, out, planes * 4, 1, 1, 0))
            if b == 0:
                L.append(LayerSpec(f"{p}.downsample", cin, size, size, planes * 4, 1, stride, 0))
            cin, size = planes * 4, out
    return L


def _mobilenetv2():
    L = [LayerSpec("features.0", 3, 224, 224, 32, 3, 2, 1)]
    size, cin, idx = 112, 32, 1
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            p = f"features.{idx}.conv"
            k = 0
            if t != 1:
                L.append(LayerSpec(f"{p}.0", cin, size, size, hidden, 1, 1, 0))
                k = 1
            L.append(LayerSpec(f"{p}.{k}.dw", hidden, size, size, hidden, 3, stride, 1,
                               groups=hidden))
            size //= stride
            L.append(LayerSpec(f"{p}.{k + 1}", hidden, size, size, c, 1, 1, 0))
            cin = c
            idx += 1
    L.append(LayerSpec("features.18", 320, 7, 7, 1280, 1, 1, 0))
    return L


def _seed():
    # seeds/nn_conv2d.txt: input 20 x 16 x 50 x 100
    return [LayerSpec("square_k3_s2", 16, 50, 100, 33, 3, 2, 0, N=20, bias=True),
            LayerSpec("k3x5_s2x1_p4x2", 16, 50, 100, 33, (3, 5), (2, 1), (4, 2), N=20,
                      bias=True),
            LayerSpec("k3x5_s2x1_p4x2_d3x1", 16, 50, 100, 33, (3, 5), (2, 1), (4, 2),
                      (3, 1), N=20, bias=True)]


NETWORKS = {"resnet18": _resnet18, "mobilenetv2": _mobilenetv2, "resnext50": _resnext50,
            "seed": _seed}


def network(name):
    """The conv layers of a built-in network (see :data:`NETWORKS`)."""
    if name not in NETWORKS:
        raise ValueError(f"network={name!r} must be one of {', '.join(sorted(NETWORKS))}")
    layers = NETWORKS[name]()
    for layer in layers:
        layer.net = name
    return layers


# ----------------------------------------------------------------------------- layer files

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _positive(v):
    return _is_int(v) and v >= 1


def _pair_of(test):
    def check(v):
        return test(v) or (isinstance(v, list) and len(v) == 2 and all(test(t) for t in v))
    return check


def _padding_ok(v):
    return v in ("same", "valid") or _pair_of(lambda t: _is_int(t) and t >= 0)(v)


#: Keys of a layer in a layer file: (what the value must be, test, required).
LAYER_SCHEMA = {
    "name": ("a string", lambda v: isinstance(v, str), False),
    "net": ("a string", lambda v: isinstance(v, str), False),
    "N": ("a positive integer", _positive, False),
    "C_in": ("a positive integer", _positive, True),
    "H": ("a positive integer", _positive, True),
    "W": ("a positive integer", _positive, True),
    "C_out": ("a positive integer", _positive, True),
    "kernel_size": ("a positive integer or a list of two", _pair_of(_positive), False),
    "stride": ("a positive integer or a list of two", _pair_of(_positive), False),
    "padding": ("a non-negative integer, a list of two, 'same' or 'valid'", _padding_ok, False),
    "dilation": ("a positive integer or a list of two", _pair_of(_positive), False),
    "groups": ("a positive integer", _positive, False),
    "bias": ("true or false", lambda v: isinstance(v, bool), False),
    "padding_mode": ("one of 'zeros', 'reflect', 'replicate', 'circular'",
                     lambda v: v in ("zeros", "reflect", "replicate", "circular"), False),
}


def validate_layer_dict(d, where):
    """Check one layer dict against :data:`LAYER_SCHEMA`; ``where`` prefixes the error.

    Raises
    ------
    ValueError
        An unknown key (with the closest known one), a missing required key,
        or a value of the wrong type, each named with ``where``.
    """
    import difflib
    if not isinstance(d, dict):
        raise ValueError(f"{where}: a layer must be an object, not {type(d).__name__}")
    for key in d:
        if key not in LAYER_SCHEMA:
            close = difflib.get_close_matches(str(key), LAYER_SCHEMA, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint}; known keys: "
                             f"{', '.join(LAYER_SCHEMA)}")
    for key, (what, test, required) in LAYER_SCHEMA.items():
        if key not in d:
            if required:
                raise ValueError(f"{where}: missing key {key!r} ({what})")
            continue
        if not test(d[key]):
            raise ValueError(f"{where}: key {key!r} must be {what}, not {d[key]!r}")


def load_layers(path):
    """Layers from a JSON layer file, validated against :data:`LAYER_SCHEMA`.

    The file holds a list of layer objects, or ``{"layers": [...]}`` with an
    optional ``"about"`` string (the format of ``bench/layers.json``). A layer
    needs ``C_in``, ``H``, ``W``, ``C_out``; the other keys take
    ``nn.Conv2d``'s defaults (``kernel_size`` 3). Layers without a ``name`` are
    called ``layer<i>``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not JSON, an unknown key, a missing key, a value of the wrong type, or
        a layer ``nn.Conv2d`` rejects; the message names the file, the layer and
        the key.
    """
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        extra = sorted(set(data) - {"layers", "about"})
        if extra:
            raise ValueError(f"{path}: unknown top-level key {extra[0]!r}; known keys: "
                             f"layers, about")
        if "layers" not in data:
            raise ValueError(f"{path}: missing top-level key 'layers'")
        data = data["layers"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of layers")
    layers = []
    for i, d in enumerate(data):
        label = f"layer {i}" + (f" ({d['name']!r})" if isinstance(d, dict) and
                                isinstance(d.get("name"), str) else "")
        where = f"{path}: {label}"
        validate_layer_dict(d, where)
        layer = LayerSpec.from_dict({"name": f"layer{i}", **d}, where)
        try:
            layer.geometry()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        layers.append(layer)
    return layers


def layers_from_torch(model, input_shape):
    """Every ``nn.Conv2d`` of a PyTorch model, with the input shape it sees.

    ``model`` is an ``nn.Module`` or the path of a file saved with
    ``torch.save(model)`` (or ``torch.jit.save``); the model runs once on zeros of
    ``input_shape`` (float32, no gradients) with forward pre-hooks.
    """
    import torch
    from torch import nn
    if not isinstance(model, nn.Module):
        path = str(model)
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:       # noqa: BLE001 -- TorchScript archives
            model = torch.jit.load(path, map_location="cpu")
    if isinstance(model, dict):
        raise ValueError(f"{model!r:.60} is a state dict, not a model: save the module "
                         f"itself (torch.save(model, path))")
    found = []
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            def hook(m, args, name=name):
                x = args[0]
                shape = tuple(x.shape) if x.dim() == 4 else (1,) + tuple(x.shape)
                found.append(LayerSpec(
                    name or "conv", shape[1], shape[2], shape[3], m.out_channels, m.kernel_size,
                    m.stride, m.padding, m.dilation, m.groups, m.bias is not None,
                    m.padding_mode, N=shape[0]))
            hooks.append(mod.register_forward_pre_hook(hook))
    if not hooks:
        raise ValueError("the model has no nn.Conv2d layers (TorchScript models cannot be "
                         "hooked: save the nn.Module with torch.save)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return found


def estimate_layers(layers, hw=None, *, requant=None, progress=None, **kwargs):
    """Estimate every layer; returns a list of :class:`~.cycle_model.Estimate`.

    Repeated layers (same shapes and arguments) are estimated once.
    """
    from .cycle_model import estimate
    memo = {}
    out = []
    for i, layer in enumerate(layers):
        key = (layer.input_shape, layer.weight_shape, tuple(layer.conv_kwargs().items()),
               layer.bias)
        e = memo.get(key)
        if e is None:
            e = memo[key] = estimate(layer.input_shape, layer.weight_shape, hw=hw,
                                     requant=requant, bias=layer.bias, **layer.conv_kwargs(),
                                     **kwargs)
        out.append(_renamed(e, layer.name))
        if progress:
            progress(i + 1, len(layers), layer.name)
    return out


def _renamed(e, name):
    from dataclasses import replace
    return replace(e, name=name)
