# wsproxy: run `make help` for the targets.
GO      ?= go
BIN     ?= bin
PKGS    ?= ./...

# Containers. The image is FROM scratch around the static binary, so nothing
# is pulled. COMPOSE is `docker compose` where that plugin exists, else the
# standalone docker-compose.
IMAGE           ?= wsproxy:local
NATS_IMAGE      ?= wsproxy-nats:local
CLUSTER_PROJECT ?= wsproxy-cluster
COMPOSE_PROJECT ?= wsproxy
ifeq ($(origin COMPOSE),undefined)
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
endif
VERSION         ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION        ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
export COMPOSE

# The version `proxy --version` prints, in the start-up line and /healthz.
LDFLAGS := -X github.com/wsproxy/wsproxy/internal/version.tag=$(VERSION)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: build ## build, then run the proxy on :8080 with the default settings (ARGS='--log-level debug' for flags; Ctrl-C stops it)
	exec $(BIN)/proxy $(ARGS)

.PHONY: build
build: ## build bin/proxy
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/proxy ./cmd/proxy

.PHONY: build-static
build-static: ## build bin/proxy-linux-amd64: static (CGO_ENABLED=0), stripped, for the image
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/proxy-linux-amd64 ./cmd/proxy

.PHONY: build-static-natsd
build-static-natsd: ## build bin/natsd-linux-amd64 (cmd/natsd: nats-server with JetStream), static, for the NATS image
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN)/natsd-linux-amd64 ./cmd/natsd

.PHONY: test
test: ## run every test with the race detector (what CI runs)
	$(GO) test -race -count=1 -timeout 8m $(PKGS)

.PHONY: check
check: ## formatting and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags compose ./test/compose/
	$(GO) vet -tags cluster ./test/cluster/

.PHONY: screenshot
screenshot: ## rewrite docs/page.png and docs/page-phone.png from the browser tests (needs chromium)
	$(GO) test -count=1 -run '^TestBrowser(Layout)?$$' ./cmd/proxy/ -update-screenshot

.PHONY: fuzz
fuzz: ## run each fuzz target for 30s
	$(GO) test -run '^$$' -fuzz FuzzParseParams -fuzztime 30s ./internal/forward/
	$(GO) test -run '^$$' -fuzz FuzzValidator -fuzztime 30s ./internal/utf8stream/
	$(GO) test -run '^$$' -fuzz FuzzClientIP -fuzztime 30s ./internal/limits/

.PHONY: bench
bench: ## wsproxy side by side with NATS and no-relay baselines, every workload (about 5-10 min; see BENCHMARKS.md)
	$(GO) run ./cmd/proxybench

.PHONY: bench-quick
bench-quick: ## smaller, shorter versions of the same workloads (under a minute)
	$(GO) run ./cmd/proxybench -quick

# Every limit on, set high enough never to refuse anything, against none.
LIMITS_ON ?= --max-groups=100000 --max-members-per-group=100000 --message-rate=1000000 --byte-rate=10GiB --memory-limit=4GiB
.PHONY: bench-limits
bench-limits: ## fan-out with every limit on next to every limit off (quick workloads)
	$(GO) run ./cmd/proxybench -quick -only fanout -proxy-only -proxy-args "--memory-limit=0"
	$(GO) run ./cmd/proxybench -quick -only fanout -proxy-only -proxy-args "$(LIMITS_ON)"

.PHONY: soak
soak: ## churn hostile clients through the proxy for 15 min, checking every message, close code and resource (SOAK_FLAGS='-duration 30s' for a short run)
	$(GO) run ./cmd/proxysoak -duration 15m $(SOAK_FLAGS)

.PHONY: image
image: build-static ## build the container image wsproxy:local (FROM scratch, non-root)
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE) .

.PHONY: up
up: image ## start the proxy with docker-compose on 127.0.0.1:8080 (WSPROXY_PORT to change)
	$(COMPOSE) -p $(COMPOSE_PROJECT) up -d
	$(COMPOSE) -p $(COMPOSE_PROJECT) ps

.PHONY: down
down: ## stop and remove what `make up` started
	$(COMPOSE) -p $(COMPOSE_PROJECT) down

.PHONY: compose-test
compose-test: ## smoke-test the image under docker-compose with two real clients (CI runs it)
	scripts/compose-test.sh

.PHONY: image-nats
image-nats: build-static-natsd ## build the cluster's NATS image wsproxy-nats:local (FROM scratch, non-root)
	docker build --file Dockerfile.nats --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(NATS_IMAGE) .

.PHONY: cluster-up
cluster-up: image image-nats ## start three proxies and NATS with docker-compose on 127.0.0.1:8081-8083
	$(COMPOSE) -f docker-compose.cluster.yml -p $(CLUSTER_PROJECT) up -d
	$(COMPOSE) -f docker-compose.cluster.yml -p $(CLUSTER_PROJECT) ps

.PHONY: cluster-down
cluster-down: ## stop and remove what `make cluster-up` started
	$(COMPOSE) -f docker-compose.cluster.yml -p $(CLUSTER_PROJECT) down

.PHONY: cluster-test
cluster-test: ## cut, kill, pause and restart nodes and NATS of the compose cluster under real clients (CI runs it; about a minute)
	scripts/cluster-test.sh
