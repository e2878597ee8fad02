"""The formal proofs (make formal) pass, and the harness reports a property that
does not hold as failed (the proofs are not vacuous)."""

from amaranth import Mux
from amaranth.hdl import Assert

from systolic_conv.sim import formal as F


def test_every_property_is_proved_with_its_covers(tmp_path):
    proved, covers, failed, lines = F.run_formal(out_dir=tmp_path, verbose=False)
    assert failed == 0, lines
    assert proved == len(F.PROPERTIES) >= 3
    assert covers >= 2 * len(F.PROPERTIES)


class _OffByOne(F.PackerConservation):
    """The packer's conservation with a wrong count: must fail."""

    name = "packer_off_by_one"

    def elaborate(self, platform):
        m = super().elaborate(platform)
        dut = self.dut
        out = Mux(dut.o_valid, dut.o_beat.count, 0)
        m.d.comb += Assert(dut.count + out != 4)       # false whenever a full beat leaves
        return m


def test_a_false_property_fails(tmp_path):
    proved, _covers, failed, lines = F.run_formal([_OffByOne], out_dir=tmp_path, verbose=False)
    assert proved == 0 and failed >= 1, lines


class _TightBound(F.NoHangAfterError):
    """The no-hang bound one cycle short of the exact one: must fail."""

    name = "no_hang_bound_short"
    BOUND = F.NoHangAfterError.BOUND - 1


class _TwoHot(F.CountersSum):
    """The counters without the Sequencer's one-hot category: the sum must fail."""

    name = "counters_two_hot"
    one_hot = False


def test_the_no_hang_bound_is_exact_and_the_counters_need_one_hot(tmp_path):
    proved, _covers, failed, lines = F.run_formal([_TightBound, _TwoHot], out_dir=tmp_path,
                                                  verbose=False)
    assert proved == 0 and failed >= 2, lines


class _ReadsRowBeingWritten(F.LineBufferCollision):
    """The collision proof with reads allowed of the row still being written: must
    fail (the write and a used read of the same address meet)."""

    name = "linebuffer_reads_incomplete_row"
    slack = 1
    depth = 8
    cover_depth = 4


def test_a_read_of_the_row_being_written_collides(tmp_path):
    proved, _covers, failed, lines = F.run_formal([_ReadsRowBeingWritten], out_dir=tmp_path,
                                                  verbose=False)
    assert proved == 0 and failed >= 1, lines
