"""Named faults for mutation testing.

The generator takes ``HardwareConfig(faults=(...))``; each name below switches on a
small, realistic bug in the generated hardware. ``make mutate`` builds each faulty
design and runs a quick regression: a fault the regression does not detect shows a
hole in the verification. Real hardware (``make rtl``) is generated with none.
"""

FAULTS = {
    "round_off_by_one": "tflite rounding-divide threshold one too high (ties and above round down)",
    "half_up_no_round": "half_up mode shifts without adding the rounding constant",
    "zero_point_dropped": "the output zero point is not added",
    "stride_h_off_by_one": "dense: the vertical stride counter steps stride_h + 1 when stride_h > 1",
    "dilation_w_ignored": "dense: horizontal dilation treated as 1",
    "dropped_valid": "dense: the element at output column 3 of every fold is dropped",
    "cw_first_ignored": "dense: the per-tile input-word offset (groups) is ignored",
    "row_release_early": "the line buffer is told a row is free one row too early",
    "swapped_weight_rows": "the weight loader feeds the array's rows in the wrong order",
    "tile_ready_early": "a weight tile is reported ready two cycles before its last word is in",
    "wrong_pad_value": "dense: on-the-fly padding inserts 0 instead of the descriptor's pad value",
    "acc_bit_cut": "the accumulator keeps one bit less than acc_width",
    "bias_dropped": "the bias is not added",
    "dw_phase_ignored": "depthwise: every column phase reads phase 0's pixels",
    "dw_shift_skipped": "depthwise: the row vector does not shift between a group's taps",
    "dw_drain_row_off": "depthwise: the drain reads the capture register of the next array row",
    "skipped_last": "the result stream never marks the final beat with last",
    "act_count_short": "the activation beat counter expects one beat less than the layer has",
    "result_ready_ignored": "the result queue pops its FIFO without looking at o_result.ready "
                            "(beats are lost under back-pressure)",
    "credit_lost_on_take": "the sequencer drops the freed result credits when a credit is taken "
                           "in the same cycle (a credit leak that ends in a hang)",
    "clamp_order_unchecked": "the descriptor checks omit clamp_lo > clamp_hi",
    "param_count_wraps": "the parameter-beat counter wraps instead of saturating (a long "
                         "parameter stream overwrites earlier tiles' parameters)",
}
