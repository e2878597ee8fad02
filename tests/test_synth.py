"""The FPGA flow on one block (fast, in ``make test``): a block of a small
configuration synthesized alone, placed and routed, its report complete. The
8x8 place-and-route is behind the ``slow`` marker (about 40 min)."""

import json

import pytest

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.synth import synthesize

SMALL = HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, max_cwords=4, lb_rows=8,
                       weight_depth=256, acc_depth=32, max_cotiles=4, out_fifo_depth=8)


@pytest.mark.synth
def test_one_block_synthesizes_places_and_routes_alone(tmp_path):
    """The dense sequencer of a 4x4 alone (inside the I/O wrapper): routed, its own
    registers and LUTs counted (not the wrapper's), no DSP or block RAM (it has
    neither), an Fmax and a critical path named by design signals."""
    rep = synthesize(SMALL, device="25k", freq_mhz=100, out_dir=tmp_path,
                     router="router2", block="dense_sequencer")
    assert rep.ok, rep.error
    assert rep.routed and rep.block == "dense_sequencer"
    assert rep.lut4 > 50 and rep.ff > 30, (rep.lut4, rep.ff)
    assert rep.dsp == 0 and rep.bram == 0
    assert rep.fmax_mhz > 20
    assert rep.critical_path and any("dut." in str(s) for s in rep.critical_path), \
        rep.critical_path
    d = rep.to_dict()
    for key in ("routed", "fmax_mhz", "lut4", "ff", "dsp", "bram", "critical_path"):
        assert key in d
    json.dumps(d)


@pytest.mark.synth
@pytest.mark.slow
def test_default_8x8_routes(tmp_path):
    """The default 8x8 placed and routed with router2 (about 40 min): the figures
    reported in docs/fpga.md. Run it with ``pytest -m slow tests/test_synth.py``."""
    rep = synthesize(HardwareConfig(), device="85k", freq_mhz=100, out_dir=tmp_path,
                     router="router2")
    assert rep.ok and rep.routed, rep.error
    assert rep.fmax_mhz > 0 and rep.lut4 > 0
