# v2backup — build, test, demo, bench, install, lint.
# `make test` and `make demo` install the Debian packages they need first
# (.ci/install-deps: idempotent, silent when everything is there).

GO      ?= go
BIN     := bin/v2backup
PREFIX  ?= /usr/local
PKGS    := ./...
TESTTIMEOUT ?= 14m

.PHONY: all build test test-short demo bench install lint deps clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/v2backup

deps:
	@bash .ci/install-deps

# Every test, FUSE integration tests included, with the race detector.
test: deps lint
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) $(PKGS)

# Unit tests only (no mounts, no servers): quick feedback while editing.
test-short:
	$(GO) test -short -count=1 -timeout 5m $(PKGS)

demo: deps build
	@bash examples/demo.sh $(BIN)

# Benchmarks: ratios against native disk and the tools users would pick
# instead, in one run. See bench/*/README.md. Results go to bench/results/.
bench: deps build
	@mkdir -p bench/results
	$(GO) run ./bench/catalog | tee bench/results/catalog.txt
	$(GO) run ./bench/snapshot | tee bench/results/snapshot.txt
	$(GO) run ./bench/fuse -json bench/results/fuse.json | tee bench/results/fuse.txt
	$(GO) run ./bench/remoteview | tee bench/results/remoteview.txt
	$(GO) run ./bench/jobs | tee bench/results/jobs.txt

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/v2backup

lint:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin bench/results
