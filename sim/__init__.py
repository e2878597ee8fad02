"""Simulation: cocotb testbenches, the compiled batch harness and their runners."""
