# otgw — OT/ICS segmentation gateway. `make help` lists the targets.
SHELL        := /bin/bash
GO           ?= go
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS      := -s -w -X main.version=$(VERSION)
BUILDFLAGS   := -trimpath -ldflags '$(LDFLAGS)'
PKGS         := ./...
# Packages whose concurrency is tested under the race detector as well.
RACE_PKGS    := ./rules/... ./gateway/... ./hal/... ./update/... ./simulate/...
FUZZTIME     ?= 10s
BENCHCOUNT   ?= 10
STATICCHECK  ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)

.PHONY: check-peers ci-fresh
check-peers: ## run each real test peer once (pymodbus, mbpoll, rsyslog...); name the Debian package for any missing
	@.ci/check-peers

ci-fresh: ## root: .ci/run on a fresh clone with scratch HOME/GOPATH/GOCACHE, then list test packages .ci/run does not install (OTGW_FRESH_PURGE=1 purges the peers first)
	@.ci/fresh

.PHONY: help build build-all package test test-race test-arm64 test-armv7 lint fuzz bench demo clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build dist/otgw for this machine (static, CGO_ENABLED=0)
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -o dist/otgw ./cmd/otgw

build-all: ## static binaries for linux/amd64, linux/arm64 and linux/arm (GOARM=7) under dist/
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(BUILDFLAGS) -o dist/otgw-linux-amd64 ./cmd/otgw
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build $(BUILDFLAGS) -o dist/otgw-linux-arm64 ./cmd/otgw
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build $(BUILDFLAGS) -o dist/otgw-linux-armv7 ./cmd/otgw
	@ls -l dist/

package: build-all ## Debian packages for amd64, arm64 and armhf under dist/ (binary, hardened systemd unit, /etc/otgw)
	$(GO) run ./board/deb/mkdeb -version $(VERSION) -out dist \
	  amd64=dist/otgw-linux-amd64 arm64=dist/otgw-linux-arm64 armhf=dist/otgw-linux-armv7

test: ## the whole suite: unit, truth (../shared/pcaps), real peers, netns, then race
	@if [ "$$CI" = true ]; then .ci/check-peers; fi
	$(GO) test -count=1 -timeout 15m $(PKGS)
	$(MAKE) --no-print-directory test-race

test-race: ## concurrency-heavy packages under the race detector
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)

test-arm64: ## unit tests of the arm64 build under qemu-aarch64-static
	@command -v qemu-aarch64-static >/dev/null || { echo "qemu-aarch64-static missing: apt-get install qemu-user-static"; exit 1; }
	OTGW_QEMU=1 CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) test -count=1 -timeout 20m -exec qemu-aarch64-static $(PKGS)

# Packages that parse hostile input with lengths from the wire or a file:
# their 32-bit behaviour (int overflow, allocation bounds) is tested on armv7.
ARMV7_PKGS   := ./simulate/capture ./rules

test-armv7: ## input parsers of the armv7 (32-bit) build under qemu-arm-static
	@command -v qemu-arm-static >/dev/null || { echo "qemu-arm-static missing: apt-get install qemu-user-static"; exit 1; }
	OTGW_QEMU=1 CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) test -count=1 -timeout 20m -exec qemu-arm-static $(ARMV7_PKGS)

lint: ## gofmt, go vet (amd64 and armv7), staticcheck, go mod tidy -diff, the layering test
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	$(GO) test -count=1 ./internal/archtest
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

fuzz: ## run every fuzz target for FUZZTIME (default 10s) each
	@set -e -o pipefail; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    if ! $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg 2>&1 | tee /tmp/otgw-fuzz.$$$$; then \
	      if grep -q 'context deadline exceeded' /tmp/otgw-fuzz.$$$$ && ! grep -q 'Failing input' /tmp/otgw-fuzz.$$$$; then \
	        echo "(the fuzz engine timed out on its own deadline, not a crash: running $$f once more)"; \
	        $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg; \
	      else rm -f /tmp/otgw-fuzz.$$$$; exit 1; fi; \
	    fi; rm -f /tmp/otgw-fuzz.$$$$; \
	  done; \
	done

bench: ## benchmarks with -benchmem, BENCHCOUNT runs each (compare with benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) $(PKGS) | tee bench.txt

demo: ## live gateway between namespaces with a real PLC and HMI (root; offline replay demo otherwise); builds only its two programs
	@bash simulate/demo/demo.sh

.PHONY: bench-datapath
# Gateway columns of bench-datapath: MODE[/spin=DURATION][/xdp][/native][/generic][/tc][/busy][/poll], comma-separated
# (MODE: ring, mmsg, xdp = AF_XDP ports; /xdp adds the flow bypass as --xdp on attaches it: the tc program with
# ring/mmsg on veth, generic XDP with AF_XDP; /tc forces the tc program, /generic generic XDP, /native native XDP). /poll adds --poll (one thread busy-polls both ports).
BENCH_IO ?= ring,xdp,mmsg,ring/xdp,ring/poll
bench-datapath: ## gateway (BENCH_IO: ring, AF_XDP, mmsg, ring with the flow bypass, ring polled) vs kernel bridge on one veth topology: small packets, TCP, Modbus RTT, RSS with 10k flows (root, < 3 min)
	@mkdir -p dist
	set -o pipefail; OTGW_BENCH_DATAPATH=1 OTGW_BENCH_IO=$(BENCH_IO) OTGW_BENCH_OUT=$(CURDIR)/dist/bench-datapath.md \
	  $(GO) test -count=1 -timeout 5m -run '^TestDatapathBench$$' -v ./gateway/e2e | grep -v 'level='

.PHONY: test-flood
FLOOD_SYNS ?= 1000000
test-flood: ## live SYN flood: FLOOD_SYNS spoofed SYNs (default 1,000,000) from an allowed client through otgw run; poller, new clients, RSS, syn_flood (root, < 1 min)
	set -o pipefail; OTGW_FLOOD_SYNS=$(FLOOD_SYNS) \
	  $(GO) test -count=1 -timeout 10m -run '^TestSYNFloodLive$$' -v ./gateway/e2e | grep -v 'level='

.PHONY: bench-uamem
bench-uamem: ## OPC UA, 100 connections x 15 MB Write: engine heap, otgw run VmRSS live (netns, root), and otgw replay RSS of the 1.5 GB capture (written to a temporary directory), with and without GOMEMLIMIT (< 3 min)
	$(GO) test -count=1 -run '^TestOPCUAFullSizeWrites$$' -v ./gateway/ | grep -E 'uafull|^(ok|FAIL|---)'
	set -o pipefail; $(GO) test -count=1 -run '^TestOPCUAWritesLiveRSS$$' -v ./gateway/e2e | grep -E 'uawrite_live|^(ok|FAIL|---)'
	set -o pipefail; OTGW_BENCH_UAREPLAY=1 \
	  $(GO) test -count=1 -timeout 10m -run '^TestOPCUAWritesReplayRSS$$' -v ./gateway/e2e | grep -v 'level='

.PHONY: evasion
EVASION_N ?= 100000
EVASION_SEED ?= 1
evasion: ## differential evasion harness, EVASION_N sequences (default 100000, ~10 min, root) + the evasion regressions (EVASION.md)
	$(GO) test -count=1 -run 'Urgent|UDP|E01NoUnjudged|HeldPDU|TinyFragment|Ambiguities|Split|OutOfOrder|Overlap|OutOfWindow' ./gateway/
	$(GO) test -count=1 -run 'FragmentThenEcho|CaptureRepairs' ./simulate/replay
	$(GO) test -count=1 ./simulate/scenarios
	$(GO) test -count=1 -run 'TestUrgentDataLive|TestScenariosLive' ./gateway/e2e
	set -o pipefail; OTGW_EVASION_N=$(EVASION_N) OTGW_EVASION_SEED=$(EVASION_SEED) OTGW_EVASION_WORKERS=48 \
	  $(GO) test -count=1 -timeout 60m -run '^TestEvasionHarness$$' -v ./gateway/e2e | grep -v 'level='
.PHONY: bench-xdp
bench-xdp: ## XDP flow bypass (native, generic) vs kernel bridge on one veth line: small packets, TCP (root, < 2 min)
	@mkdir -p dist
	set -o pipefail; OTGW_BENCH_XDP=1 OTGW_BENCH_OUT=$(CURDIR)/dist/bench-xdp.md \
	  $(GO) test -count=1 -timeout 5m -run '^TestFastPathBench$$' -v ./hal/xdp | grep -v '^=== RUN'
.PHONY: image test-image
BOARD        ?= x86-generic
# Release version of the image's otgw (a SemVer release: bundles compare it).
IMAGE_VERSION ?= 0.1.0
image: ## bootable A/B disk image dist/image/$(BOARD).img from Debian packages and a static otgw (board/image/README.md; root for apt-get download)
	IMAGE_VERSION=$(IMAGE_VERSION) board/image/mkimage.sh $(BOARD) dist/image/$(BOARD).img

test-image: image ## boot the x86-generic image in qemu-system-x86_64 (TCG) between netns taps: Modbus reads pass, a write is denied (root)
	set -o pipefail; OTGW_TEST_IMAGE=1 OTGW_IMAGE=$(CURDIR)/dist/image/$(BOARD).img \
	  $(GO) test -count=1 -timeout 15m -v ./board/image/ | grep -v '^=== RUN'

.PHONY: test-image-arm64
test-image-arm64: ## boot the qemu-arm64 image (U-Boot) in qemu-system-aarch64 (TCG, slow: not in CI): slot A, Modbus through it, install v2 -> trial -> commit, v3 -> rollback (root)
	$(MAKE) image BOARD=qemu-arm64
	set -o pipefail; OTGW_TEST_IMAGE_ARM64=1 OTGW_IMAGE_ARM64=$(CURDIR)/dist/image/qemu-arm64.img \
	  $(GO) test -count=1 -timeout 30m -v -run '^TestImageArm64$$' ./board/image/ | grep -v '^=== RUN'

.PHONY: bench-offline
bench-offline: build ## otgw dissect --json and otgw replay against tshark -T fields on a generated 600k-frame Modbus/DNP3 capture, whole process (RUNS=5)
	@test -f dist/bench-offline/offline.pcap || $(GO) run ./simulate/capture/benchcap -frames 600000 -conns 300 -out dist/bench-offline
	@simulate/capture/benchcap/bench-offline.sh dist/otgw dist/bench-offline

clean: ## remove build outputs
	rm -rf dist bench.txt
