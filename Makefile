# Verbund. `make help` lists the targets.
GO        ?= go
BIN       := bin/verbund
TOOLS     := $(CURDIR)/.tools
BUF_VERSION             := v1.50.0
PROTOC_GEN_GO_VERSION   := v1.36.12
PROTOC_GEN_CONNECT_VERSION := v1.21.1
export PATH := $(TOOLS):$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
# -buildvcs=auto stamps the git revision where there is one (verbund
# version, and the version nodes gossip), whatever GOFLAGS says.
build: ## build bin/verbund
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/verbund

.PHONY: run
run: build ## start a single node with the sample data (data in .verbund/dev)
	$(BIN) dev

.PHONY: cluster
cluster: build ## start 3 voters + 2 members on loopback (mTLS, sample data), or resume them / start the ones not running; Ctrl-C stops what it started
	scripts/cluster.sh

.PHONY: cluster-stop
cluster-stop: ## stop the nodes of `make cluster` (by their PID files); fails naming any node that would not stop
	@scripts/cluster.sh stop

.PHONY: web-deps
web-deps: ## npm ci in node/web when node_modules is absent (axe-core and KERN UX for the browser tests)
	@if [ ! -d node/web/node_modules ]; then cd node/web && npm ci --no-audit --no-fund; fi

.PHONY: test
test: web-deps breaking-if-history ## run every test (race detector on the concurrent packages), the browser tests and the benchmark's smoke run
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 12m ./...
	$(GO) test -race -count=1 -timeout 12m ./registry/... ./federation/... ./node/... ./internal/... ./keys/...
	$(MAKE) bench-smoke

.PHONY: soak
soak: ## long fault runs: Jepsen-style with power cuts, clock jumps, process pauses/kills, corruption, power loss; disk-full on a real tmpfs (root) (VERBUND_SOAK_SEEDS, VERBUND_SOAK_DURATION)
	VERBUND_SOAK=1 $(GO) test -count=1 -run 'TestJepsenSoak|TestPowerLossSoak|TestClockJumpSoak' -v -timeout 120m ./node
	VERBUND_SOAK=1 $(GO) test -count=1 -run 'TestStateAndSnapshotCorruption' -v -timeout 30m ./node
	VERBUND_SOAK=1 $(GO) test -count=1 -run 'TestDiskFull.*Soak' -v -timeout 10m ./node
	VERBUND_SOAK=1 $(GO) test -count=1 -run 'TestHandoverStoreCorruption|TestPowerLoss' -v -timeout 30m ./federation/handover
	VERBUND_SOAK=1 $(GO) test -count=1 -run 'TestProcessFaultSoak' -v -timeout 30m ./e2e

.PHONY: test-short
test-short: ## quick tests (skips the slow fault runs)
	$(GO) test -short ./...

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$${FUZZTIME:-30s} $$pkg || exit 1; \
	  done; \
	done

.PHONY: bench-go
bench-go: ## run the Go benchmarks (go test -bench, in-process)
	$(GO) test -run='^$$' -bench=. -benchmem ./...

# Debian's etcd-server (3.4) for the side-by-side benchmark: installed with
# apt-get when missing (directly as root, else with sudo).
ETCD ?= /usr/bin/etcd
.PHONY: etcd-server
etcd-server:
	@if [ ! -x "$(ETCD)" ]; then \
	  echo "installing Debian's etcd-server (for the benchmark)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq etcd-server >/dev/null; \
	fi

.PHONY: bench
bench: build etcd-server ## Verbund vs etcd side by side on loopback (3 nodes each) + gossip at scale; writes bench/results/ (about 10 minutes)
	$(GO) run ./cmd/verbund-bench -etcd $(ETCD) -out bench/results

# The national load into 3 voters (bench/results/national.md). The default
# is issue 12's 5 million offerings; NATIONAL_OFFERINGS=1000000 for a
# shorter run.
NATIONAL_OFFERINGS ?= 5000000
.PHONY: bench-national
bench-national: build ## the synthesised national data set into 3 voters: load time, memory, disk, snapshots, queries, a new member's catch-up (NATIONAL_OFFERINGS)
	$(GO) run ./cmd/verbund-bench -suite=false -gossip "" -national $(NATIONAL_OFFERINGS) -out bench/results

.PHONY: bench-smoke
bench-smoke: build etcd-server ## every benchmark row for about a second against both clusters, and a small national load (2 offerings per municipality) into 3 voters; fails on any error (about 2 minutes)
	$(GO) run ./cmd/verbund-bench -etcd $(ETCD) -smoke -national 22008

.PHONY: lint
lint: tools breaking ## go vet, gofmt, buf lint, buf breaking
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '/gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	buf lint

# The API as released: the newest release tag reachable from HEAD (v*), or
# the previous commit while there is none. Needs the git history (a full
# clone with tags: `git fetch --tags --unshallow` in a shallow CI checkout).
BREAKING_AGAINST ?= $(shell git describe --tags --abbrev=0 --match 'v*' HEAD 2>/dev/null || echo HEAD~1)

.PHONY: breaking
# make test checks API compatibility wherever the git history is there; a
# checkout without it (a shallow clone, an exported tree) says so loudly
# and goes on, since nothing on the machine can fetch the history.
.PHONY: breaking-if-history
breaking-if-history:
	@if [ "$$(git rev-parse --is-shallow-repository 2>/dev/null)" = false ]; then $(MAKE) --no-print-directory breaking; \
	else echo "*** NOT CHECKED: buf breaking needs the git history (this checkout is shallow or not a git clone): run 'make breaking' in a full clone ***"; fi

breaking: tools ## buf breaking: the proto API stays compatible with the last release tag (or HEAD~1)
	@if [ "$$(git rev-parse --is-shallow-repository)" = true ]; then echo "buf breaking needs the git history: this is a shallow clone (git fetch --unshallow --tags)"; exit 1; fi
	buf breaking --against '.git#ref=$(BREAKING_AGAINST)'

.PHONY: generate
generate: tools ## regenerate the protobuf and Connect code in proto/gen
	buf lint
	rm -rf proto/gen
	buf generate

.PHONY: checkgenerate
checkgenerate: generate ## fail if the committed generated code is stale
	git diff --exit-code -- proto/gen

.PHONY: tools
tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-connect-go

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-connect-go:
	GOBIN=$(TOOLS) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_VERSION)

.PHONY: clean
clean: ## remove build output and the dev data dir
	rm -rf bin .verbund
