# goclip: build, test, benchmark, and the demo.
#   make build      the shim (only when its sources changed), then bin/goclip
#   make test       every Go test (the README's test command)
#   make bench      benchmarks against the Python peers; tables in bench/results/
#   make finetune   the built-in demo (or MODEL=DIR DATA=DIR for a real fine-tune)
#   make train      training from scratch (CONFIG=NAME DATA=DIR)
SHELL := /bin/bash
GO ?= go
SHIM_DIR := build/shim
SHIM := $(SHIM_DIR)/lib/libgoclip_torch.so
SHIM_SRC := $(wildcard torch/csrc/*.cc torch/csrc/*.h) torch/csrc/CMakeLists.txt
GO_SRC := $(shell find . -name '*.go' -not -path './build/*' 2>/dev/null) go.mod go.sum
THREADS ?= $(shell nproc)

.PHONY: all build shim test test-short bench clean check-torch2 gpu-prepare finetune train vet fmt

all: build

shim: $(SHIM)

# One way to build the shim everywhere (here, CI, Docker, the GPU machine): CMake when it
# can configure Torch, else plain g++ against the libtorch it finds.
$(SHIM): $(SHIM_SRC) scripts/build-shim.sh third_party/find-libtorch.sh
	scripts/build-shim.sh --out $(SHIM_DIR) --jobs $(THREADS)

bin/goclip: $(SHIM) $(GO_SRC)
	$(GO) build -o bin/goclip ./cmd/goclip

build: bin/goclip

test: build
	@files=$$(gofmt -l $$(find . -name '*.go' -not -path './build/*')); \
	  if [ -n "$$files" ]; then echo "gofmt would change: $$files"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

test-short: build
	$(GO) test -count=1 -short ./...

# What the GPU machine (no Go there) needs: bin/goclip and the test binaries, packed into
# build/gpu-bundle for scripts/gpu-check.sh (docs/gpu.md).
gpu-prepare: build
	scripts/gpu-prepare.sh

# Compile the shim against libtorch 2.x headers (Debian trixie's libtorch-dev, fetched,
# not installed) so the 2.x code paths cannot rot while CI links 1.13.
check-torch2:
	third_party/torch2-headers.sh build/torch2
	ls torch/csrc/*.cc | xargs -P $(THREADS) -I{} sh -c 'echo "syntax check (libtorch 2.x) {}" && \
	  g++ -std=c++17 -fsyntax-only -Itorch/csrc -isystem build/torch2/usr/include \
	    -isystem build/torch2/usr/include/torch/csrc/api/include {}'

bench: build
	bench/run.sh

vet:
	$(GO) vet ./...

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
