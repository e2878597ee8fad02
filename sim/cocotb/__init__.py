"""cocotb regression environment for the accelerator (Verilator and Icarus).

* :mod:`.layers` -- layer cases (random from a seed, or named), stall patterns,
  the plan -> invocations path and the per-invocation golden expectations;
  pure Python, shared by the cocotb testbench, the regression and the tests;
* :mod:`.coverage` -- functional coverage (bins, pairwise crosses);
* :mod:`.tb` -- the testbench parts (stream sources, monitors, protocol checkers,
  scoreboard, watchdog) and :class:`~.tb.ConvEnv`, which runs layers on a DUT;
* :mod:`.test_conv` -- the cocotb test module;
* :mod:`.runner` -- builds (one per hardware config and simulator) and runs it
  through ``cocotb_tools.runner``.
"""
