# wid's build. `make test` is what CI runs (.ci/run); it needs Go and the
# system parts scripts/deps.sh installs or checks (gnome-keyring and dbus,
# tmux, PostgreSQL 15), and runs that script first.
GO ?= go
PKGS := ./...
# staticcheck at a fixed release, fetched through the module proxy; it is
# not a dependency of wid's module.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
LDFLAGS := -X github.com/wid-project/wid/internal/version.Version=$(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build test vet gen proto bench bench-fleet fuzz clean image

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/widagent ./cmd/widctl

vet:
	$(GO) vet $(PKGS)

# The container image deploy/kubernetes runs (needs docker; see docs/kubernetes.md).
IMAGE ?= ghcr.io/wid-project/wid:latest
image:
	docker build --build-arg VERSION=$(shell git describe --tags --always --dirty 2>/dev/null || echo dev) -t $(IMAGE) .

# The system parts first (scripts/deps.sh), then build, vet, staticcheck, then
# every test with the race detector. The tests include the freshness checks of
# generated files (protobuf code, completions, man pages) and PostgreSQL 15 for
# --store postgres. Then the two scripts that need a system part: the login key
# in a real Secret Service (gnome-keyring) and the real `widctl tui` driven in
# tmux; each prints one result line.
test:
	./scripts/deps.sh
	$(GO) build $(PKGS)
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	$(GO) test -race -timeout 20m $(PKGS)
	CI=true ./scripts/keyring-test.sh </dev/null
	CI=true ./scripts/tui-tmux.sh </dev/null

# Regenerate shell completions and man pages from the command tree. The man
# pages carry docgen.ReleaseDate, or SOURCE_DATE_EPOCH when it is set (the
# committed pages are made without it).
gen:
	$(GO) run ./tools/gendocs

# Regenerate the auth API's Go code (needs protoc; scripts/protogen.sh installs it as root).
proto:
	./scripts/protogen.sh

# Agent sync (issue 18): 1,000 agents x 10,000 workload identities, the
# whole-state push against the incremental sync, one JSON line each. The
# whole-state push takes minutes per change at this size (every agent's
# stream lists and filters every identity), so it times one change and no
# burst or bundle change (those figures are -1).
bench-fleet:
	$(GO) build -o .bin/fleet/ ./cmd/widagent
	$(GO) run ./bench/fleet -agents 1000 -identities 10000 -sync full -changes 1 -burst 0 -bundle=false -timeout 30m -wid-bin .bin/fleet
	$(GO) run ./bench/fleet -agents 1000 -identities 10000 -sync incremental -wid-bin .bin/fleet

# Benchmarks named by the issues; figures go in the issue notes.
bench:
	$(GO) test -run '^$$' -bench . -skip '^BenchmarkSDS|^BenchmarkAgentHeldIdentities' -benchmem ./internal/core/...
	# One agent holding 1,000 and 10,000 workload identities, 1,000 selecting the caller: FetchX509SVID p50/p99 and agent heap.
	$(GO) test -run '^$$' -bench '^BenchmarkAgentHeldIdentities' -benchtime 2000x ./internal/core/agent
	# The same with the real binaries, the agent a process of its own: its RSS, live heap and FetchX509SVID p50/p99.
	$(GO) build -o .bin/agentheld/ ./cmd/widagent ./cmd/widctl
	$(GO) run ./bench/agentheld -identities 1000 -selecting 1000 -wid-bin .bin/agentheld
	$(GO) run ./bench/agentheld -identities 10000 -selecting 1000 -wid-bin .bin/agentheld
	# SDS: renewal to an Envoy-style client; 100 SDS streams beside the Workload API load, p99 against without.
	$(GO) test -run '^$$' -bench '^BenchmarkSDS' -benchtime 5x ./internal/core/agent
	# Issue 19: a foreign bundle change to a watching workload, refresh hint 1s, median and max of 20.
	WID_BENCH=1 $(GO) test -run '^TestFederatedBundleLatency$$' -v -count=1 ./e2e/
	# Issue 20: a revocation to the CRL served on the diag listener, and to an SDS client's validation context, median and max of 20.
	WID_BENCH=1 $(GO) test -run '^TestRevocationLatency$$' -v -count=1 ./e2e/
	$(GO) run ./bench/issuance -clients 16 -duration 10s -request pubkey
	$(GO) run ./bench/issuance -clients 16 -duration 10s -request csr
	$(MAKE) bench-fleet
	# The store, SQLite against PostgreSQL 15 (fsync on both; issue 17): the store-level
	# BenchmarkApply and BenchmarkAppendAudit ran in the first line; here issuance end to end,
	# on SQLite (the first line above), one replica on PostgreSQL, then three replicas on
	# one PostgreSQL with the same 16 clients spread over them.
	$(GO) run ./bench/issuance -clients 16 -duration 10s -request pubkey -store postgres
	$(GO) run ./bench/issuance -clients 16 -duration 10s -request pubkey -store postgres -replicas 3
	# widctl login to first SVID on disk, and widctl svid issue, with the real binaries (issue 5).
	$(GO) run ./bench/login -n 15
	# widctl tui: first screen with 10,000 events in the log; key to redraw and RSS at 500 SVIDs/s (issue 6).
	$(GO) run ./bench/tui -events 10000 -rate 500 -duration 12s
	# The Workload API against SPIRE 1.13.3 in the same run (SPIRE's build: minutes the first time).
	./scripts/spire/build.sh
	# The e2e harness's control: spire-agent's api fetch against a real spire-agent.
	$(GO) test -count=1 -run '^TestSpireAgentFetchesFromSpireAgent$$' ./e2e
	$(GO) build -ldflags "$(LDFLAGS)" -o .bin/wid/ ./cmd/widagent ./cmd/widctl
	$(GO) run ./bench/workloadapi -system spire,wid -spire-bin .bin/spire-1.13.3 -wid-bin .bin/wid -clients 16 -duration 10s
	# CA rotation: bundle change to a watching workload, re-issue of 1,000 cached SVIDs, Workload API p99 meanwhile.
	$(GO) run ./bench/rotation -wid-bin .bin/wid -changes 20 -svids 1000 -clients 16
	# Failover: kill -9 (and SIGSTOP) of the replica an agent follows, to the agent's next issuance (issue 17).
	$(GO) run ./bench/failover -wid-bin .bin/wid -runs 10 -fault kill
	$(GO) run ./bench/failover -wid-bin .bin/wid -runs 3 -fault stop

# Run each fuzz target for FUZZTIME (default 60s).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzMatchPath$$' -fuzztime $(FUZZTIME) ./internal/core/rbac
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/core/resource
	$(GO) test -run '^$$' -fuzz '^FuzzParseBundle$$' -fuzztime $(FUZZTIME) ./internal/core/resource
	$(GO) test -run '^$$' -fuzz '^FuzzParseCSR$$' -fuzztime $(FUZZTIME) ./internal/core/issuer
	$(GO) test -run '^$$' -fuzz '^FuzzParsePublicKey$$' -fuzztime $(FUZZTIME) ./internal/core/issuer
	$(GO) test -run '^$$' -fuzz '^FuzzParseStat$$' -fuzztime $(FUZZTIME) ./internal/core/attest
	$(GO) test -run '^$$' -fuzz '^FuzzParseStatus$$' -fuzztime $(FUZZTIME) ./internal/core/attest
	$(GO) test -run '^$$' -fuzz '^FuzzParseCgroups$$' -fuzztime $(FUZZTIME) ./internal/core/attest
	$(GO) test -run '^$$' -fuzz '^FuzzPodList$$' -fuzztime $(FUZZTIME) ./internal/core/attest
	$(GO) test -run '^$$' -fuzz '^FuzzParseRule$$' -fuzztime $(FUZZTIME) ./internal/core/condition
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/cli/svid
	$(GO) test -run '^$$' -fuzz '^FuzzDiscoveryRequest$$' -fuzztime $(FUZZTIME) ./internal/core/agent
	$(GO) test -run '^$$' -fuzz '^FuzzParseServiceAccount$$' -fuzztime $(FUZZTIME) ./internal/core/resource
	$(GO) test -run '^$$' -fuzz '^FuzzParseClaims$$' -fuzztime $(FUZZTIME) ./internal/core/kubejoin
	$(GO) test -run '^$$' -fuzz '^FuzzLoginRequest$$' -fuzztime $(FUZZTIME) ./internal/core/auth
	$(GO) test -run '^$$' -fuzz '^FuzzJoinRequest$$' -fuzztime $(FUZZTIME) ./internal/core/auth
	$(GO) test -run '^$$' -fuzz '^FuzzParseUpstreamPEM$$' -fuzztime $(FUZZTIME) ./internal/core/ca

clean:
	rm -rf bin dist .bin
