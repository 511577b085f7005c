# wsproxy: run `make help` for the targets.
GO      ?= go
BIN     ?= bin
PKGS    ?= ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## run the proxy on :8080 with the default settings
	$(GO) run ./cmd/proxy

.PHONY: build
build: ## build bin/proxy
	$(GO) build -o $(BIN)/proxy ./cmd/proxy

.PHONY: test
test: ## run every test with the race detector (what CI runs)
	$(GO) test -race -count=1 -timeout 8m $(PKGS)

.PHONY: check
check: ## formatting and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

.PHONY: fuzz
fuzz: ## run each fuzz target for 30s
	$(GO) test -run '^$$' -fuzz FuzzParseParams -fuzztime 30s ./internal/forward/
	$(GO) test -run '^$$' -fuzz FuzzValidator -fuzztime 30s ./internal/utf8stream/

.PHONY: bench
bench: ## wsproxy side by side with NATS and no-relay baselines, every workload (about 5-10 min; see BENCHMARKS.md)
	$(GO) run ./cmd/proxybench

.PHONY: bench-quick
bench-quick: ## smaller, shorter versions of the same workloads (under a minute)
	$(GO) run ./cmd/proxybench -quick
