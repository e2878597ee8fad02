"""Static timing from an SDF (host/timing.py) on a hand-written netlist whose paths
are worked out below."""

from systolic_conv.timing import analyse, register_name

# r1 --0.5 clk-to-q--> (1.0 route) LUT A->F 0.3 (2.0 route) r2.DI (setup 0.1)
# r1 --------------------------------- (0.2 route) ----------- r3.DI (setup 0.1)
# r2 --0.5--> (4.0 route) LUT2 B->F 0.3 (4.5 route) r3.CE (setup 0.2)
SDF = r"""(DELAYFILE
  (CELL
    (CELLTYPE "top")
    (INSTANCE )
    (DELAY
      (ABSOLUTE
        (INTERCONNECT dut.blk.r1_TRELLIS_FF_Q/Q dut.blk.l1_LUT4_Z/A (1000:1000:1000) (1000:1000:1000))
        (INTERCONNECT dut.blk.l1_LUT4_Z/F dut.blk.r2_TRELLIS_FF_Q_3/DI (2000:2000:2000) (2000:2000:2000))
        (INTERCONNECT dut.blk.r1_TRELLIS_FF_Q/Q dut.oth.r3_TRELLIS_FF_Q/DI (200:200:200) (200:200:200))
        (INTERCONNECT dut.blk.r2_TRELLIS_FF_Q_3/Q dut.oth.l2\$x/B (4000:4000:4000) (4000:4000:4000))
        (INTERCONNECT dut.oth.l2\$x/F dut.oth.r3_TRELLIS_FF_Q/CE (4500:4500:4500) (4500:4500:4500))
      )
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE dut.blk.r1_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE (IOPATH CLK Q (400:450:500) (400:450:500))))
  )
  (CELL
    (CELLTYPE "TRELLIS_COMB")
    (INSTANCE dut.blk.l1_LUT4_Z)
    (DELAY (ABSOLUTE (IOPATH A F (200:250:300) (200:250:300))))
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE dut.blk.r2_TRELLIS_FF_Q_3)
    (DELAY (ABSOLUTE (IOPATH CLK Q (400:450:500) (400:450:500))))
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) (100:100:100) (0:0:0))
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_COMB")
    (INSTANCE dut.oth.l2\$x)
    (DELAY (ABSOLUTE (IOPATH B F (300:300:300) (300:300:300))))
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE dut.oth.r3_TRELLIS_FF_Q)
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) (100:100:100) (0:0:0))
      (SETUPHOLD (posedge CE) (posedge CLK) (200:200:200) (0:0:0))
    )
  )
)
"""


def test_register_names():
    assert register_name("dut.dense.y_end_TRELLIS_FF_Q_14") == "dut.dense.y_end"
    assert register_name("dut.rq.l0_acc1_TRELLIS_FF_Q") == "dut.rq.l0_acc1"


def test_arrival_slack_and_grouping():
    # r2.DI: 0.5 + 1.0 + 0.3 + 2.0 + 0.1 = 3.9 ns; r3.DI: 0.5 + 0.2 + 0.1 = 0.8 ns;
    # r3.CE: 0.5 + 4.0 + 0.3 + 4.5 + 0.2 = 9.5 ns
    s = analyse(SDF, 200.0)                    # 5 ns: only r3.CE fails, by 4.5 ns
    assert s.endpoints == 3 and s.failing_endpoints == 1
    assert abs(s.worst_slack_ns + 4.5) < 1e-9
    (e,) = s.worst
    assert (e.register, e.start, e.levels) == ("dut.oth.r3", "dut.blk.r2", 3)   # r2, l2, r3
    assert s.by_block == {"blk -> oth": (1, e.slack_ns)}
    s = analyse(SDF, 1000 / 3.5)               # 3.5 ns: r2.DI fails too, by 0.4 ns
    assert s.failing_endpoints == 2
    assert [round(x.slack_ns, 6) for x in s.worst] == [-6.0, -0.4]
    assert analyse(SDF, 100.0).failing_endpoints == 0
