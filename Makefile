# The Makefile is the contract: CI calls these targets only.
SHELL   := /bin/bash
GO      ?= go
BIN     ?= bin/ldcd
FUZZTIME ?= 20s

.PHONY: build test verify fuzz crash-soak props run clean measure measure-idle bench bench-etcd bench-etcd-deps jepsen jepsen-quick jepsen-deps jepsen-soak

## build: compile the ldcd binary into bin/
build:
	$(GO) build -o $(BIN) ./cmd/ldcd

## test: every test, with the race detector (real processes, real Raft, real bbolt), then
## the quick Jepsen matrix
test:
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) jepsen-quick

TIME ?=
SEED ?=

## jepsen-deps: what the Jepsen harness needs for partitions (iptables; needs root)
jepsen-deps:
	@command -v iptables >/dev/null 2>&1 || { 		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then 			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables iproute2 >/dev/null; 		else echo "jepsen-deps: iptables missing and not root: partition faults will be skipped"; fi; }

## jepsen-quick: each workload for about 30s under mixed faults (part of make test)
jepsen-quick: jepsen-deps
	LDCD_JEPSEN=quick TIME=$(TIME) SEED=$(SEED) $(GO) test -count=1 -timeout 30m -run 'TestJepsen$$' -v ./jepsen 2>&1 | grep --line-buffered -E '^(JEPSEN|---|ok|FAIL|PASS)|jepsen_test.go:[0-9]+: (jepsen|seed|partition faults)|Error|panic'; exit $${PIPESTATUS[0]}

## jepsen: the full matrix, every workload under every nemesis (TIME per cell, default 60s; SEED)
jepsen: jepsen-deps
	LDCD_JEPSEN=full TIME=$(TIME) SEED=$(SEED) $(GO) test -count=1 -timeout 6h -run 'TestJepsen$$' -v ./jepsen 2>&1 | grep --line-buffered -E '^(JEPSEN|---|ok|FAIL|PASS)|jepsen_test.go:[0-9]+: (jepsen|seed|partition faults)|Error|panic'; exit $${PIPESTATUS[0]}

SEEDS ?= 20
CELLS ?= register-membership register-placement bank-membership bank-placement
SOAK_TIME ?= 30s

## jepsen-soak: the CELLS (workload-nemesis) over SEEDS seeds, SOAK_TIME each; prints a table of
## cells × seeds (ok with the successful operations, or FAIL)
jepsen-soak: jepsen-deps
	scripts/jepsen-soak.sh $(SEEDS) '$(CELLS)' $(SOAK_TIME)

## verify: formatting, vet, and a tidy go.mod
verify:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff
	cd bench/etcd && $(GO) vet ./... && $(GO) mod tidy -diff

## fuzz: run each fuzzer for FUZZTIME
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCommand$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAdmin$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzApply$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzParseTopology$$' -fuzztime $(FUZZTIME) ./placement
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTxn$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzHTTP$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzInternalRoutes$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzAppendRequest$$' -fuzztime $(FUZZTIME) ./raftgroup
	$(GO) test -run '^$$' -fuzz '^FuzzAppendResponse$$' -fuzztime $(FUZZTIME) ./raftgroup
	$(GO) test -run '^$$' -fuzz '^FuzzHeartbeats$$' -fuzztime $(FUZZTIME) ./raftgroup
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) ./client
	$(GO) test -run '^$$' -fuzz '^FuzzParseAnswer$$' -fuzztime $(FUZZTIME) ./client
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./raftgroup/sharedlog

## crash-soak: the shared log's randomized crash tests over CRASH_SEEDS seeds from a new start each
## run (a failure prints LDCD_CRASH_SEED=... to replay it), and the exhaustive crash points
CRASH_SEEDS ?= 20000
crash-soak:
	LDCD_CRASH_SOAK=$(CRASH_SEEDS) $(GO) test -count=1 -timeout 3h -run 'Crash' -v ./raftgroup/sharedlog 2>&1 | grep --line-buffered -E '^(---|ok|FAIL|PASS)|crash_test.go|panic'; exit $${PIPESTATUS[0]}

## props: the placement planner's property tests over PROPS generated cases (default 100000),
## from seed PROPS_BASE (default 1); make test runs 200 of them
PROPS ?= 100000
PROPS_BASE ?= 1
props:
	LDCD_PROPS=$(PROPS) LDCD_PROPS_BASE=$(PROPS_BASE) $(GO) test -count=1 -timeout 6h -run 'TestPlannerProperties$$' -v ./placement

## measure: placement figures over 10 runs (failover, failback, move pause, split of 100k keys)
measure:
	LDCD_MEASURE=1 $(GO) test -count=1 -timeout 60m -run 'TestMeasure' -v ./jepsen 2>&1 | grep --line-buffered -E 'FIGURES|run [0-9]|loaded|^(ok|FAIL|---)'

## measure-idle: CPU, memory, goroutines and fds of nodes hosting 101 idle groups, per configuration
measure-idle:
	LDCD_MEASURE=1 $(GO) test -count=1 -timeout 30m -run 'TestMeasureIdle' -v ./jepsen 2>&1 | grep --line-buffered -E 'FIGURES|^(ok|FAIL|---)'

## bench: the write path's variants side by side (raftgroup), then put throughput and latency of a
## 3-node cluster with 64 clients
bench:
	$(GO) test -run '^$$' -bench Apply -benchtime 20000x ./raftgroup
	$(GO) test -run '^$$' -bench Put64 -benchtime 20000x ./jepsen

BENCH_TIME ?= 10s
BENCH_RUNS ?= put:1,put:64,put:256,get:64,stale-get:64
# BENCH_FLAGS: more flags of bench/etcd, e.g. '--interleave --rounds 3' (both clusters up, each
# workload on both back to back, median ratio of the rounds)
BENCH_FLAGS ?=

## bench-etcd-deps: Debian's etcd-server, for the comparison (needs root to install)
bench-etcd-deps:
	@command -v etcd >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }; \
		else echo "bench-etcd-deps: etcd missing; install etcd-server as root"; exit 1; fi; }

## bench-etcd: the same workloads against a 3-member etcd and a 3-node ldcd on loopback, side by side
## (BENCH_TIME per run, BENCH_RUNS as workload:clients[@rate],...)
bench-etcd: build bench-etcd-deps
	cd bench/etcd && $(GO) run . --ldcd $(CURDIR)/$(BIN) --duration $(BENCH_TIME) --runs '$(BENCH_RUNS)' --json $(CURDIR)/bin/bench-etcd.json $(BENCH_FLAGS)

## run: build and start a single node with the defaults
run: build
	$(BIN) start

clean:
	rm -rf bin
