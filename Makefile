# goclip: build, test, benchmark, and the demo.
#   make venv       the project's Python environment, build/venv (third_party/venv.sh):
#                   torch 2.11 (whose libtorch the shim uses), transformers, peft, open_clip
#   make build      the venv and apt packages when missing, the shim (only when its
#                   sources changed), then bin/goclip (with libjpeg-turbo when installed)
#   make test       gofmt, go vet and every Go test (the README's test command)
#   make check-torch-newest  the shim syntax-checked against the newest torch (CUDA, NCCL on)
#   make bench      benchmarks against the Python peers; tables in bench/results/
#   make bench-features  the training-step speed-ups alone and together (CPU)
#   make finetune   the built-in demo (or MODEL=DIR DATA=DIR for a real fine-tune)
#   make train      training from scratch (CONFIG=NAME DATA=DIR)
SHELL := /bin/bash
GO ?= go
SHIM_DIR := build/shim
SHIM := $(SHIM_DIR)/lib/libgoclip_torch.so
SHIM_SRC := $(wildcard torch/csrc/*.cc torch/csrc/*.h) torch/csrc/CMakeLists.txt
GO_SRC := $(shell find . -name '*.go' -not -path './build/*' 2>/dev/null) go.mod go.sum
THREADS ?= $(shell nproc)
# Which libtorch the shim is built against: venv (default: build/venv's torch), python
# (python3's torch, or $PYTHON's), debian (libtorch-dev, 2.x from trixie on); LIBTORCH=DIR
# (an unpacked libtorch) wins over all three. scripts/build-shim.sh documents the choice.
GOCLIP_TORCH ?= venv
export GOCLIP_TORCH
VENV := build/venv
VENV_STAMP := $(VENV)/goclip-requirements.sha256
# With the venv's torch (a CUDA wheel with the CUDA headers and NCCL of its nvidia-*
# wheels), the shim must compile its CUDA and NCCL path, GPU or not.
ifeq ($(GOCLIP_TORCH)$(LIBTORCH),venv)
SHIM_DEPS := $(VENV_STAMP)
SHIM_FLAGS := --require-cuda
endif
# Go build tags: jpegturbo (internal/jpegturbo: libjpeg-turbo, exact as PIL, statically
# linked) when third_party/find-jpegturbo.sh finds libjpeg-turbo, which third_party/apt.sh
# installs; else Go's image/jpeg. GOCLIP_JPEG=go builds the fallback, GOCLIP_JPEG=turbo
# fails without the library. The tags are written to GO_TAGS_FILE only when they change,
# so that a new choice rebuilds bin/goclip; recipes read them from there.
GOCLIP_JPEG ?= auto
export GOCLIP_JPEG
GO_TAGS_FILE := build/go-tags.txt
GO_TAGS = $$(cat $(GO_TAGS_FILE))
# The newest torch PyPI serves, for check-torch-newest (bump when a new one appears).
TORCH_NEWEST ?= 2.15.0

.PHONY: FORCE all build shim venv apt test test-short bench bench-features clean check-torch-newest gpu-prepare finetune train vet fmt fuzz-smoke

all: build

shim: $(SHIM)

venv: $(VENV_STAMP)

# third_party/venv.sh does nothing when the venv matches requirements.txt; touch keeps
# make from asking again.
$(VENV_STAMP): third_party/requirements.txt third_party/venv.sh
	third_party/venv.sh
	@touch $@

apt:
	third_party/apt.sh

# The libtorch choice, rewritten only when it changes, so that a new choice rebuilds the shim.
SHIM_CHOICE := $(SHIM_DIR)/torch-choice.txt
$(SHIM_CHOICE): FORCE
	@mkdir -p $(SHIM_DIR); echo "GOCLIP_TORCH=$(GOCLIP_TORCH) LIBTORCH=$(LIBTORCH)" | cmp -s - $@ || \
	  echo "GOCLIP_TORCH=$(GOCLIP_TORCH) LIBTORCH=$(LIBTORCH)" >$@

# One way to build the shim everywhere (here, CI, Docker, the GPU machine):
# scripts/build-shim.sh against the libtorch GOCLIP_TORCH / LIBTORCH choose.
$(SHIM): $(SHIM_SRC) scripts/build-shim.sh third_party/find-libtorch.sh $(SHIM_DEPS) $(SHIM_CHOICE)
	@third_party/apt.sh
	scripts/build-shim.sh --out $(SHIM_DIR) --jobs $(THREADS) $(SHIM_FLAGS)

$(GO_TAGS_FILE): FORCE
	@third_party/apt.sh
	@mkdir -p build; t=$$(third_party/find-jpegturbo.sh --why) || exit 1; \
	  echo "$$t" | cmp -s - $@ 2>/dev/null || echo "$$t" >$@

bin/goclip: $(SHIM) $(GO_TAGS_FILE) $(GO_SRC)
	$(GO) build -tags "$(GO_TAGS)" -o bin/goclip ./cmd/goclip

build: bin/goclip

# Every test with the build's tags (libjpeg-turbo's tests against the venv's PIL and
# Debian's python3-pil, which apt.sh --test installs, included), then, when the build
# has libjpeg-turbo, package dataset again as the fallback build (Go's image/jpeg) runs it.
test: build $(VENV_STAMP)
	@third_party/apt.sh --test
	@files=$$(gofmt -l $$(find . -name '*.go' -not -path './build/*')); \
	  if [ -n "$$files" ]; then echo "gofmt would change: $$files"; exit 1; fi
	@if [ "$${CI:-}" = true ] && [ -z "$(GO_TAGS)" ]; then \
	  echo "make test: CI=true needs libjpeg-turbo: $$(GOCLIP_JPEG=turbo third_party/find-jpegturbo.sh 2>&1)"; exit 1; fi
	$(GO) vet -tags "$(GO_TAGS)" ./...
	$(GO) test -tags "$(GO_TAGS)" -count=1 -timeout 40m ./...
	@if [ -n "$(GO_TAGS)" ]; then set -x; $(GO) vet ./dataset ./internal/jpegturbo && $(GO) test -count=1 ./dataset; fi

test-short: build
	$(GO) test -tags "$(GO_TAGS)" -count=1 -short ./...

# Every fuzz target for FUZZTIME each (their seed corpora already run in make test), as
# package:target pairs; run after make build. Minimisation is capped so that a new input found late does not
# eat a whole target's time.
FUZZTIME ?= 5s
FUZZ_TARGETS := \
	torch/serialize:FuzzReadPT torch/serialize:FuzzUnpickle \
	torch/serialize:FuzzSafetensors torch/serialize:FuzzSafetensorsSharded \
	dataset:FuzzDecodeImage dataset:FuzzReadKaggle dataset:FuzzReadKarpathy \
	dataset:FuzzReadCSV dataset:FuzzReadJSONL \
	clip:FuzzLoadConfig clip:FuzzLoadCheckpoint \
	clip/tokenizer:FuzzEncode clip/tokenizer:FuzzLoadHF clip/tokenizer:FuzzLoadOpenAI \
	lora:FuzzLoadAdapter

fuzz-smoke: $(GO_TAGS_FILE)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=./$${t%%:*}; fn=$${t##*:}; echo "== $$pkg $$fn"; \
	  $(GO) test -tags "$(GO_TAGS)" -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg; \
	done

# What the GPU machine (no Go there) needs: bin/goclip and the test binaries, packed into
# build/gpu-bundle for scripts/gpu-check.sh (docs/gpu.md).
gpu-prepare: build
	scripts/gpu-prepare.sh

# Compile every shim source, with CUDA and NCCL on, against the headers of the newest
# torch PyPI serves (its wheel is fetched into the wheelhouse, only include/ unpacked), so
# that goclip learns of an API change before users do. CUDA headers and NCCL: the venv's.
check-torch-newest: $(VENV_STAMP)
	third_party/check-torch-newest.sh $(TORCH_NEWEST)

bench: build
	bench/run.sh

bench-features: build
	python3 bench/train_step_features.py bench/results/train-step-features-cpu.md

vet: $(GO_TAGS_FILE)
	$(GO) vet -tags "$(GO_TAGS)" ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

clean:
	rm -rf build bin

# ---- runs ----
MODEL ?=
DATA ?=
CONFIG ?= seed-scratch
OUT ?=
ARGS ?=

finetune: build
	scripts/finetune.sh "$(MODEL)" "$(DATA)" "$(OUT)" $(ARGS)

train: build
	@if [ -z "$(DATA)" ]; then echo "make train needs DATA=DIR (and CONFIG=NAME, default seed-scratch)"; exit 2; fi
	bin/goclip train --config $(CONFIG) --data $(DATA) --out $(or $(OUT),runs/train-$(CONFIG)) $(ARGS)
