# Tidemark. `make demo` and `make test` are the two commands a newcomer runs.
SHELL := /bin/bash
BIN   := $(CURDIR)/.bin
export PATH := $(BIN):$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/tidemark-backup/tidemark/internal/version.Version=$(VERSION) \
           -X github.com/tidemark-backup/tidemark/internal/version.Commit=$(COMMIT)

# The race detector roughly doubles run time; CI has two cores, so it is on by
# default and can be turned off with RACE= for a quick local run.
RACE ?= -race
TESTFLAGS ?= -timeout 20m

.PHONY: all build deps tools test test-short vet lint fmt proto verify-proto fix-proto bench demo clean man

all: build

build:
	go build -ldflags '$(LDFLAGS)' -o tidemark ./cmd/tidemark

# man writes one man page per command (cobra/doc) into dist/man (git-ignored):
# man -l dist/man/tidemark-backup.1 (tidemark.1 lists them all)
man:
	rm -rf dist/man
	go run ./cmd/tidemark-man dist/man

deps:
	deploy/dev/deps.sh all

tools:
	deploy/dev/deps.sh tools

vet:
	go vet ./...

test: deps vet
	go test $(RACE) $(TESTFLAGS) ./...

test-short: vet
	go test -short ./...

fmt:
	gofmt -s -w $$(git ls-files '*.go' | grep -v '^proto/gen/')

# lint is the whole bar: golangci-lint, buf lint, and generated code up to date.
lint: tools verify-proto
	test -z "$$(gofmt -s -l $$(git ls-files '*.go'))" || { gofmt -s -l $$(git ls-files '*.go'); echo 'gofmt: run make fmt'; exit 1; }
	golangci-lint run ./...
	buf lint

proto: tools
	rm -rf proto/gen
	buf generate

fix-proto: proto

# verify-proto regenerates into a scratch tree and fails if the committed code differs.
verify-proto: tools
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	buf generate --output $$tmp && \
	diff -r $$tmp/proto/gen proto/gen >/dev/null || { echo 'proto/gen is stale: run make proto and commit'; exit 1; }

bench: deps
	go test -run '^$$' -bench . -benchmem -timeout 60m ./bench/...

demo: deps build
	deploy/dev/demo.sh

clean:
	rm -f tidemark
