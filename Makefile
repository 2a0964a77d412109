# freshet — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/.tools
BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/freshet-iot/freshet/internal/version.Version=$(VERSION) -X github.com/freshet-iot/freshet/internal/version.Commit=$(COMMIT)
CMDS := agent/cmd/freshet-agent hub/cmd/freshet-hub firmware-sim/cmd/freshet-sim
# The agent with OPC UA: github.com/gopcua/opcua costs about 0.85 MB of binary
# and 1 MB of resident memory, so the default agent leaves it out (README,
# "Measured (agent)"). The simulator is built with it, so the demo reads its PLC.
OPCUA_AGENT := freshet-agent-opcua
INFLUXD := $(TOOLS)/bin/influxd
INFLUXD_VERSION := v1.8.10
STATICCHECK := $(TOOLS)/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
# Execution counts, not durations: a duration -fuzztime races Go's fuzz
# coordinator at the deadline and fails with a bare "context deadline
# exceeded" (golang/go#75804, fixed in Go 1.27, not in 1.26.x).
FUZZTIME ?= 50000x
# The race detector needs cgo and a C compiler; without one, tests run without it.
RACE ?= $(shell command -v gcc >/dev/null 2>&1 && echo -race)
# Fuzz targets: package:Target.
FUZZ_TARGETS := ./protocol:FuzzDecodeBatch ./protocol:FuzzDecodeAck ./protocol:FuzzVerifyAck ./protocol:FuzzDecodeStatus ./protocol:FuzzParseTopic ./hub/window:FuzzDecodeBlob ./firmware-sim/modbus:FuzzDecodeRequest ./firmware-sim/modbus:FuzzFramer ./agent/sensor:FuzzDecodeModbusValue

.PHONY: help run build test test-short cross release bench fuzz fuzz-short tools lint clean

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

run: tools build ## the local demo: influxd, freshet-hub with its embedded broker, 20 simulated gateways (Ctrl-C stops all)
	./bin/freshet-sim -demo -devices 20 -work .run

build: ## build the commands into bin/ for this machine
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./agent/cmd/freshet-agent ./hub/cmd/freshet-hub
	CGO_ENABLED=0 $(GO) build -trimpath -tags opcua -ldflags '$(LDFLAGS)' -o $(BIN)/ ./firmware-sim/cmd/freshet-sim
	CGO_ENABLED=0 $(GO) build -trimpath -tags opcua -ldflags '$(LDFLAGS)' -o $(BIN)/$(OPCUA_AGENT) ./agent/cmd/freshet-agent

test: tools ## everything: unit, integration with real Mosquitto/influxd, bounded fuzzing
	$(GO) vet ./...
	$(GO) test $(RACE) -count=1 -timeout 20m ./...
	$(GO) test $(RACE) -count=1 -tags opcua -run 'OPCUA|NodeID|CheckFieldDevices|FieldGateway' ./agent ./agent/sensor ./firmware-sim/fleet
	$(MAKE) --no-print-directory fuzz-short

test-short: ## unit tests only, no services
	$(GO) test -short -count=1 ./...

cross: ## static builds of every command (and the agent with OPC UA) for linux amd64, arm64, armv7, armv6 into dist/
	@set -e; for target in amd64: arm64: arm:7 arm:6; do \
		arch=$${target%%:*}; arm=$${target##*:}; suffix=$$arch$${arm:+v$$arm}; \
		for cmd in $(CMDS) opcua:agent/cmd/freshet-agent; do \
			tags=; name=$$(basename $$cmd); \
			case $$cmd in opcua:*) cmd=$${cmd#opcua:}; tags=opcua; name=$(OPCUA_AGENT);; */freshet-sim) tags=opcua;; esac; \
			out=dist/$$name-linux-$$suffix; \
			CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -tags "$$tags" -ldflags '$(LDFLAGS)' -o $$out ./$$cmd; \
			echo "$$out $$(stat -c %s $$out) bytes"; \
		done; \
	done

release: ## stripped static binaries for linux amd64, arm64, armv7, armv6, version-stamped, with SHA-256 checksums, in dist/
	rm -rf dist
	$(MAKE) --no-print-directory cross
	cd dist && sha256sum freshet-* > SHA256SUMS
	@echo "dist/SHA256SUMS written; version $(VERSION)"

bench: tools ## every benchmark, printed as one Markdown table of figures against goals (BENCH_OUT=file keeps the raw output for benchstat); about 6 minutes
	@$(GO) run ./internal/benchtable/cmd/benchtable -go '$(GO)' -ldflags '$(LDFLAGS)'$(if $(BENCH_OUT), -out '$(BENCH_OUT)')

fuzz-short: ## every fuzz target for FUZZTIME (default 50000x executions) each; part of `make test`
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

fuzz: ## every fuzz target for 2 million executions each (a few minutes)
	$(MAKE) --no-print-directory fuzz-short FUZZTIME=2000000x

tools: $(INFLUXD) ## build the test tools into .tools/bin (influxd 1.8.10)

$(INFLUXD):
	@mkdir -p $(TOOLS)/bin
	@echo "building influxd $(INFLUXD_VERSION) into $(TOOLS)/bin (about a minute, once)"
	CGO_ENABLED=0 GOBIN=$(TOOLS)/bin $(GO) install github.com/influxdata/influxdb/cmd/influxd@$(INFLUXD_VERSION)

$(STATICCHECK):
	@mkdir -p $(TOOLS)/bin
	GOBIN=$(TOOLS)/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK) ## gofmt check, go vet, staticcheck (pinned)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

clean: ## remove build output (not the tools)
	rm -rf $(BIN) dist
