"""Progress bars (tqdm, only on a terminal) and the one-time Verilator build notice."""

import io

import pytest

from systolic_conv import HardwareConfig
from systolic_conv import progress as pg
from systolic_conv.sim import toolchain


@pytest.fixture(autouse=True)
def not_quiet(monkeypatch):
    monkeypatch.delenv("SYSTOLIC_CONV_QUIET", raising=False)
    monkeypatch.setattr(pg, "_quiet", None)


def test_resolve_progress(monkeypatch):
    calls = []
    cb, close = pg.resolve_progress(lambda d, t: calls.append((d, t)), "x")
    cb(1, 2)
    assert calls == [(1, 2)]
    assert pg.resolve_progress(False, "x")[0] is None
    assert pg.resolve_progress(None, "x")[0] is None
    monkeypatch.setattr(pg, "_stderr_is_tty", lambda: False)
    assert pg.resolve_progress("auto", "x")[0] is None            # not a terminal: no bar
    assert isinstance(pg.resolve_progress(True, "x")[0], pg.ProgressBar)
    monkeypatch.setattr(pg, "_stderr_is_tty", lambda: True)
    assert isinstance(pg.resolve_progress("auto", "x")[0], pg.ProgressBar)
    pg.set_quiet(True)
    assert pg.resolve_progress("auto", "x")[0] is None
    assert pg.resolve_progress(True, "x")[0] is None
    with pytest.raises(TypeError, match=r"^progress='yes' must be 'auto', True, False"):
        pg.resolve_progress("yes", "x")


def test_bar_draws_on_stderr(monkeypatch, capsys):
    bar = pg.ProgressBar("layer conv1", unit="inv", force=True)
    for i in range(1, 4):
        bar(i, 3, f"invocation {i}")
    bar.close()
    err = capsys.readouterr().err
    assert "layer conv1" in err and "3/3" in err and "inv" in err


def test_announce_build_once_and_quiet(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(toolchain, "_announced", set())
    assert toolchain.announce_build("the harness of r8c8d8a32", 105, file=out)
    assert not toolchain.announce_build("the harness of r8c8d8a32", 105, file=out)
    assert out.getvalue() == ("building the harness of r8c8d8a32 with Verilator (about 2 min; "
                              "cached for later runs)\n")
    monkeypatch.setenv("SYSTOLIC_CONV_QUIET", "1")
    assert not toolchain.announce_build("another", 10, file=out)
    assert out.getvalue().count("\n") == 1


def test_build_estimate_grows_with_the_model():
    small = toolchain.build_estimate_s(HardwareConfig(rows=4, cols=4))
    big = toolchain.build_estimate_s(HardwareConfig(data_width=16))
    assert 30 < small < 90 and 120 < big < 300
    assert toolchain.build_estimate_s(HardwareConfig(), "cocotb") > \
        toolchain.build_estimate_s(HardwareConfig())
