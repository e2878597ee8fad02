"""Layer files (--layers JSON): validated against a schema, errors name the file and key."""

import json

import pytest

from systolic_conv.networks import LayerSpec, load_layers

GOOD = {"name": "c1", "C_in": 16, "H": 20, "W": 30, "C_out": 8, "kernel_size": [3, 5],
        "stride": 2, "padding": "valid"}


def write(tmp_path, data, name="net.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def test_good_file_and_defaults(tmp_path):
    p = write(tmp_path, {"about": "two layers", "layers": [GOOD, {"C_in": 4, "H": 8, "W": 8,
                                                                   "C_out": 4}]})
    a, b = load_layers(p)
    assert (a.kernel_size, a.stride, a.padding) == ((3, 5), (2, 2), "valid")
    assert b.name == "layer1" and b.kernel_size == (3, 3) and b.groups == 1 and not b.bias


@pytest.mark.parametrize("layer, message", [
    (dict(GOOD, kernel=5), r"unknown key 'kernel' \(did you mean "
                           r"'kernel_size'\?\); known keys: name, net, N, C_in"),
    (dict(GOOD, strides=2), r"unknown key 'strides' \(did you mean 'stride'\?\)"),
    ({k: v for k, v in GOOD.items() if k != "H"}, r"missing key 'H' "
                                                  r"\(a positive integer\)"),
    (dict(GOOD, C_out="8"), r"key 'C_out' must be a positive integer, not '8'"),
    (dict(GOOD, stride=[2, 0]), r"key 'stride' must be a positive integer or a list of two, "
                                r"not \[2, 0\]"),
    (dict(GOOD, bias=1), r"key 'bias' must be true or false, not 1"),
    (dict(GOOD, padding="full"), r"key 'padding' must be a non-negative integer, a list of two, "
                                 r"'same' or 'valid', not 'full'"),
    (dict(GOOD, padding_mode="mirror"), r"key 'padding_mode' must be one of 'zeros', "),
    (dict(GOOD, groups=3), r"groups=3 must divide in_channels=16"),
])
def test_bad_layer_names_file_layer_and_key(tmp_path, layer, message):
    p = write(tmp_path, [layer])
    prefix = "^" + str(p).replace(".", r"\.") + r": layer 0 \('c1'\): "
    with pytest.raises(ValueError, match=prefix + message):
        load_layers(p)


def test_bad_file_structure(tmp_path):
    with pytest.raises(ValueError, match=r"net\.json: unknown top-level key 'layer'; known keys"):
        load_layers(write(tmp_path, {"layer": [GOOD]}))
    with pytest.raises(ValueError, match=r"net\.json: expected a non-empty list of layers"):
        load_layers(write(tmp_path, []))
    with pytest.raises(ValueError, match=r"net\.json: layer 1: a layer must be an object, not int"):
        load_layers(write(tmp_path, [GOOD, 3]))
    bad = tmp_path / "bad.json"
    bad.write_text("{'layers': }")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        load_layers(bad)
    with pytest.raises(FileNotFoundError):
        load_layers(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"^layer: unknown key 'kernel'"):
        LayerSpec.from_dict({"name": "x", "C_in": 1, "H": 1, "W": 1, "C_out": 1, "kernel": 1})
