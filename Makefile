# The Makefile is the contract: CI calls these targets only.
GO      ?= go
BIN     ?= bin/ldcd
FUZZTIME ?= 20s

.PHONY: build test verify fuzz run clean measure bench

## build: compile the ldcd binary into bin/
build:
	$(GO) build -o $(BIN) ./cmd/ldcd

## test: every test, with the race detector (real processes, real Raft, real bbolt)
test:
	$(GO) test -race -count=1 -timeout 20m ./...

## verify: formatting, vet, and a tidy go.mod
verify:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff

## fuzz: run each fuzzer for FUZZTIME
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCommand$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzParseTopology$$' -fuzztime $(FUZZTIME) ./placement
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTxn$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzHTTP$$' -fuzztime $(FUZZTIME) ./server

## measure: placement figures over 10 runs (failover, failback, move pause, split of 100k keys)
measure:
	LDCD_MEASURE=1 $(GO) test -count=1 -timeout 60m -run 'TestMeasure' -v ./jepsen 2>&1 | grep -E 'FIGURES|run [0-9]|loaded|^(ok|FAIL|---)'

## bench: put throughput and latency of a 3-node cluster with 64 clients
bench:
	$(GO) test -run '^$$' -bench Put64 -benchtime 20000x ./jepsen

## run: build and start a single node with the defaults
run: build
	$(BIN) start

clean:
	rm -rf bin
