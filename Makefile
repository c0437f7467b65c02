# Metal's two commands: `make dev` runs Metal locally on real agents,
# `make test` passes the tests. Both set up a fresh Debian 12 machine first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
export METAL_NOMAD_BIN := $(BIN)/nomad
export METAL_CONSUL_BIN := $(BIN)/consul
export METAL_NVIDIA_PLUGIN_DIR := $(BIN)/plugins
GO ?= go
# Packages that must build without cgo: everything but the streamer.
NOCGO_PKGS = $(shell $(GO) list ./... | grep -v '/streamer')
# One package at a time: the browser, agent and timing tests share 2 cores.
TEST_FLAGS ?= -count=1 -p 1 -timeout 30m

.PHONY: all dev test deps tools build images vet lint-jobs lint-terraform nocgo unit fuzz bench clean

all: build

## dev: install what is missing, start Consul and Nomad, run Metal, print the player URL
## (DRIVER=docker: build the images and run everything in containers)
## (GATEWAYS=3: the gateway job with count = 3 behind a local load balancer)
DRIVER ?= raw_exec
GATEWAYS ?= 1
dev: deps tools build $(if $(filter docker,$(DRIVER)),images)
	$(BIN)/metal dev -driver $(DRIVER) -gateways $(GATEWAYS)

## test: everything CI runs
test: deps tools build images vet nocgo lint-jobs lint-terraform
	@echo "==> compiling tests (in parallel)"
	@rm -rf $(CURDIR)/.cache/tests && $(GO) test -c -o $(CURDIR)/.cache/tests/ ./... && rm -rf $(CURDIR)/.cache/tests
	@echo "==> go test (one package at a time; CI=true: a test that would skip for a missing tool or privilege fails)"
	CI=true $(GO) test $(TEST_FLAGS) ./...
	cd tools/nvidia-plugin && CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" $(GO) vet . && CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" CI=true $(GO) test $(TEST_FLAGS) .

deps:
	@tools/deps.sh

tools:
	@tools/build.sh nomad consul tofu nvidia-plugin

build:
	@echo "==> building bin/metal"
	@$(GO) build -o $(BIN)/metal ./cmd/metal

## images: metal:dev and metal-desktop:dev from images/Dockerfile (the base
## image from Debian's packages where no registry is reachable)
images:
	@tools/images.sh

vet:
	@echo "==> go vet"
	@$(GO) vet ./...

nocgo:
	@echo "==> CGO_ENABLED=0 build of everything but streamer/"
	@CGO_ENABLED=0 $(GO) build $(NOCGO_PKGS)

lint-jobs:
	@echo "==> nomad fmt -check jobs/"
	@$(BIN)/nomad fmt -check -recursive jobs/

lint-terraform:
	@echo "==> tofu fmt -check -recursive terraform/"
	@TF_CLI_CONFIG_FILE=$(CURDIR)/tools/tofu/tofurc $(BIN)/tofu fmt -check -recursive terraform/

## fuzz: each fuzz target for a short, bounded time, to grow the corpora (the
## committed corpora in testdata/fuzz run in every `go test`, so in `make
## test`). Not part of `make test`: Go's fuzzer stalls at random here, in
## minimization (golang/go#48820) and in its worker protocol (#56238), and a
## test that fails at random is a failing test. Minimization is off
## (-fuzzminimizetime 0): Go's minimizer can stall far past -fuzztime
## (golang/go#48820, #52569); a crasher is written as found. `timeout` bounds
## each run whatever the fuzzer does (compiling included: keep FUZZTIME
## under two minutes), and says so when it fires.
FUZZTIME ?= 10s
FUZZ = timeout -k 10s 180s $(GO) test -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 0 -fuzz
fuzz:
	@echo "==> fuzzing, $(FUZZTIME) each"
	$(FUZZ) '^FuzzCreateSession$$' ./gateway/ || { echo "fuzz: FuzzCreateSession failed or ran past 180s" >&2; exit 1; }
	$(FUZZ) '^FuzzParseInput$$' ./streamer/ || { echo "fuzz: FuzzParseInput failed or ran past 180s" >&2; exit 1; }
	$(FUZZ) '^FuzzCheckOffer$$' ./streamer/ || { echo "fuzz: FuzzCheckOffer failed or ran past 180s" >&2; exit 1; }
	$(FUZZ) '^FuzzVerify$$' ./internal/token/ || { echo "fuzz: FuzzVerify failed or ran past 180s" >&2; exit 1; }
	$(FUZZ) '^FuzzPeerFilter$$' ./turn/ || { echo "fuzz: FuzzPeerFilter failed or ran past 180s" >&2; exit 1; }

unit:
	$(GO) test -short $(TEST_FLAGS) ./...

## bench: latency and scale figures; writes bench-results/results.{json,md} and latency.png
BENCH_OUT := $(CURDIR)/bench-results
BENCH = METAL_BENCH_OUT=$(BENCH_OUT) $(GO) test -p 1 -run '^$$' -benchtime 1x -timeout 20m
# The clock starts before the build: the report says how long `make bench`
# took as a whole and how much of it was building.
bench:
	@rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT) && date +%s > $(BENCH_OUT)/started
	@$(MAKE) --no-print-directory deps build
	@# What the benchmarks run: Nomad, Consul and the device plugin (not OpenTofu).
	@tools/build.sh nomad consul nvidia-plugin
	@date +%s > $(BENCH_OUT)/built
	@echo "==> waiting up to 60 s for the build's load to settle (1-minute load average below 1)"
	@for i in $$(seq 60); do awk '{ exit !($$1 < 1.0) }' /proc/loadavg && break; sleep 1; done; cat /proc/loadavg > $(BENCH_OUT)/loadavg-before
	@echo "==> streamer: glass-to-glass, frame rates, capture-to-encoded, CPU, first frame (5 runs per configuration, playout-delay order alternating)"
	$(BENCH) -bench 'BenchmarkStreamer$$' ./streamer/ | tee $(BENCH_OUT)/bench.txt || touch $(BENCH_OUT)/failed
	@echo "==> streamer: 720p30 streams per box"
	$(BENCH) -bench 'BenchmarkStreamsPerBox$$' ./streamer/ | tee -a $(BENCH_OUT)/bench.txt || touch $(BENCH_OUT)/failed
	@echo "==> gateway, Nomad placement, TURN against coturn"
	$(BENCH) -bench . ./e2e/ | tee -a $(BENCH_OUT)/bench.txt || touch $(BENCH_OUT)/failed
	@# The report is written whatever failed; a failed benchmark then fails make bench.
	@$(GO) run ./e2e/benchreport -dir $(BENCH_OUT)
	@if [ -e $(BENCH_OUT)/failed ]; then grep -E -- '^--- FAIL|_test.go:[0-9]+:' $(BENCH_OUT)/bench.txt; echo "make bench: a benchmark failed (above); its figures are missing from the report"; exit 1; fi

clean:
	rm -rf $(BIN)
