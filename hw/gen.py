"""Verilog generation for a :class:`HardwareConfig`."""

import json
import pathlib

from amaranth.back import verilog

from .config import HardwareConfig, DEFAULT
from .accel import Conv2dAccelerator

__all__ = ["generate_verilog", "write_rtl", "TOP_NAME"]

TOP_NAME = "systolic_conv"


def generate_verilog(cfg: HardwareConfig = DEFAULT) -> str:
    """Return the Verilog text of the accelerator for ``cfg``."""
    top = Conv2dAccelerator(cfg)
    text = verilog.convert(top, name=TOP_NAME, emit_src=False)
    header = (f"// systolic-conv accelerator, generated from HardwareConfig:\n"
              f"// {json.dumps(cfg.to_dict(), sort_keys=True)}\n")
    return header + text


def write_rtl(out_dir, cfg: HardwareConfig = DEFAULT):
    """Write ``systolic_conv.v`` and ``config.json`` to ``out_dir``; return the .v path."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v = out / f"{TOP_NAME}.v"
    v.write_text(generate_verilog(cfg))
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), sort_keys=True, indent=1) + "\n")
    return v
