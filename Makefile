# devid — see README.md.
GO      ?= go
BIN     := bin
CMDS    := $(notdir $(wildcard cmd/*))
GOFLAGS ?= -trimpath
# The version from git (packaging/pkgversion), set in every binary by the
# linker: `PROG --version`, devid_build_info. Empty outside a git checkout.
LDFLAGS = $(shell $(GO) run ./packaging/version -ldflags 2>/dev/null)

.PHONY: all build test demo lint bench bench-fleet clean packages images compose

all: build

## build: build every command into bin/
build:
	$(GO) build $(GOFLAGS) -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## packages: .deb and .rpm packages of devid, devid-ca, devid-host and devid-agent into dist/ (packaging/README.md)
packages:
	$(GO) run ./packaging/mkpackages -out dist

## test: every test: unit, script and end-to-end (needs swtpm and OpenSSH; see .ci/run)
test: lint
	$(GO) test -race -count=1 -timeout 20m ./...

## demo: run the whole story locally, told step by step, then clean up
demo: build
	$(BIN)/devid-demo --bin $(BIN)

## images: build devid's Debian container images (bookworm, trixie) unless
## docker has them; needs root and debootstrap (see internal/debimage)
images:
	$(GO) run ./cmd/devid-images

## compose: what contrib/compose builds on: the images, and devid's packages
## (built from this checkout) in contrib/compose/packages
compose:
	$(GO) run ./cmd/devid-images --packages contrib/compose/packages

## bench: the benchmarks whose figures the README quotes
bench:
	$(GO) test -run '^$$' -bench . -benchtime 200x ./attestca/
	$(GO) test -run '^$$' -bench . -benchtime 10x ./enroll/
	$(GO) test -run '^$$' -bench HostdIdle -benchtime 1x ./hostd/e2e/
	$(GO) test -run '^$$' -bench KRLPropagation -benchtime 40x ./hostd/e2e/
	$(GO) test -run '^$$' -bench Build -benchtime 1x ./krl/
	$(GO) test -run '^$$' -bench Query ./krl/
	$(GO) test -run '^$$' -bench Load -benchtime 3x ./krl/
	$(GO) test -run '^$$' -bench Exec -benchtime 2000x ./cmd/devid-principals/
	$(GO) test -run '^$$' -bench Handshake -benchtime 30x ./sshagent/
	$(GO) test -run '^$$' -bench HostKeyAgentTPM -benchtime 30x ./hostd/e2e/
	$(GO) test -run '^$$' -bench Login -benchtime 30x ./agentd/e2e/
	$(GO) test -run '^$$' -bench AgentIdle -benchtime 1x ./agentd/e2e/
	$(GO) test -run '^$$' -bench Login -benchtime 40x ./cmd/devid-principals/

## bench-fleet: the fleet simulation the README quotes: 10,000 simulated
## hosts against two devid-ca replicas on PostgreSQL and a stock step-ca
## v0.30.2 built from the module proxy (never committed); ~12 minutes.
## BENCHFLAGS adds devid-bench flags (--json, --db bbolt --replicas 1, ...).
bench-fleet:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/devid-ca ./cmd/devid-bench
	cd $${TMPDIR:-/tmp} && CGO_ENABLED=0 GOFLAGS= GOBIN=$(abspath $(BIN))/stock $(GO) install github.com/smallstep/certificates/cmd/step-ca@v0.30.2
	$(BIN)/devid-bench --devid-ca $(BIN)/devid-ca --step-ca $(BIN)/stock/step-ca $(BENCHFLAGS)

## lint: formatting and vet
lint:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN) .demo dist
