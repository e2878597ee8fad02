"""Named faults for mutation testing.

The generator takes ``HardwareConfig(faults=(...))``; each name below switches on a
small, realistic bug in the generated hardware. ``make mutate`` builds each faulty
design and runs a quick regression: a fault the regression does not detect shows a
hole in the verification. Real hardware (``make rtl``) is generated with none.
"""

FAULTS = {
    "round_off_by_one": "tflite rounding-divide threshold one too high (ties and above round down)",
    "half_up_no_round": "half_up mode shifts without adding the rounding constant",
    "stride_h_off_by_one": "vertical stride counter steps stride_h + 1 when stride_h > 1",
    "dilation_w_ignored": "horizontal dilation treated as 1 in the window generator",
    "dropped_valid": "the element at output column 3 of every fold is dropped",
    "swapped_weight_rows": "the weight loader feeds array rows in the wrong order",
    "wrong_pad_value": "on-the-fly padding inserts 0 instead of the descriptor's pad value",
    "acc_bit_cut": "the accumulator buffer keeps one bit less than acc_width",
    "skipped_last": "the result stream never marks the final beat with last",
    "bias_dropped": "the bias is not loaded into the accumulator",
    "relu_ignored": "the ReLU clamp is not applied",
    "reflect_as_replicate": "horizontal reflect padding indexes like replicate",
    "zero_point_dropped": "the output zero point is not added",
    "cw_first_ignored": "the per-tile input-word offset (groups) is ignored",
    "row_release_early": "the line buffer frees a row slot one row too early",
    "act_count_short": "the activation beat counter expects one beat less (the last row never completes)",
    "acc_forward_dropped": "the accumulator read misses the write made two cycles before it (no forward)",
}
