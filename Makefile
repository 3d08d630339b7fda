# Trellis: one test command (`make test`), run by README readers and by .ci/run alike.
# Everything it needs is installed or built here; tools are pinned and cached under .cache/.

GO          ?= go
CACHE       := $(CURDIR)/.cache
TOOLS_BIN   := $(CACHE)/bin
STATICCHECK := $(TOOLS_BIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
# Test timeout per package: generous for 2-core CI machines.
TEST_TIMEOUT ?= 15m

.PHONY: all build test lint unit e2e bench bench-micro bench-proxy bench-controlplane fuzz clean kube-tools print-kube-dir crds ui ui-check chromium netns-tools bench-ui

# Real Kubernetes for tests (internal/testenv/kubeenv): etcd and kube-apiserver built from their Go
# modules (internal/testenv/tools/*) at the versions pinned there, cached per version. Cold: several
# minutes on 2 cores; afterwards instant (a stamp records what was built). The directory name must
# stay what kubeenv.BinDir computes (TestBinDirMatchesMakefile checks).
KUBE_TOOLS   := internal/testenv/tools
KUBE_VERSION := $(shell awk '{sub(/^require[ \t]+/, "")} $$1=="k8s.io/kubernetes" && $$2~/^v/ {print $$2}' $(KUBE_TOOLS)/kube-apiserver/go.mod)
ETCD_VERSION := $(shell awk '{sub(/^require[ \t]+/, "")} $$1=="go.etcd.io/etcd/server/v3" && $$2~/^v/ {print $$2}' $(KUBE_TOOLS)/etcd/go.mod)
KUBE_DIR     := $(CACHE)/kube/kube-apiserver-$(KUBE_VERSION)_etcd-$(ETCD_VERSION)

all: build

build: ui
	$(GO) build -o bin/ ./cmd/...

# The console front-end (internal/ui/web, see its README): npm ci from the committed lock file, a
# TypeScript check and esbuild into internal/ui/web/dist. dist/ is committed and embedded
# (internal/ui/assets.go), so `go build` works without Node.js; make test checks it is up to date.
UI_DIR := internal/ui/web
ui:
	@command -v npm >/dev/null || { echo "make ui: npm not found; install Node.js >= 18 (go build alone uses the committed $(UI_DIR)/dist)"; exit 1; }
	cd $(UI_DIR) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

ui-check: ui
	@git diff --quiet -- $(UI_DIR)/dist && [ -z "$$(git ls-files --others --exclude-standard -- $(UI_DIR)/dist)" ] || \
	  { git status --short -- $(UI_DIR)/dist; echo "$(UI_DIR)/dist does not match its sources: commit what make ui built"; exit 1; }

# Headless Chromium for the browser tests (internal/ui/uitest): Debian's package, installed when root.
chromium:
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	else echo "chromium is missing and this is not root: install Debian's chromium (sudo apt-get install chromium) for the browser tests"; exit 1; fi

# iptables (Debian's nft-backed one) and iproute2 for the interception test in real network
# namespaces (internal/intercept), installed when root.
netns-tools:
	@command -v iptables-restore >/dev/null && command -v ip >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq iptables iproute2; \
	else echo "iptables or iproute2 is missing and this is not root: the network namespace tests need root (they will be skipped)"; fi

$(STATICCHECK):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

kube-tools:
	@GO=$(GO) $(KUBE_TOOLS)/build.sh $(KUBE_DIR)

print-kube-dir:
	@echo $(KUBE_DIR)

# Istio's CRDs for `trellis install` (manifests/crds): refreshed from the istio.io/api version in
# go.mod after bumping it; manifests/crds's test fails until this is run.
crds:
	$(GO) generate ./manifests/crds

# Unit and integration tests, race detector on: most packages here are concurrent.
# TRELLIS_REQUIRE_KUBE=1 (TRELLIS_REQUIRE_BROWSER=1) turns a missing kube-apiserver or etcd
# (chromium) into a failure, never a skip; as root, TRELLIS_REQUIRE_NETNS=1 does the same for the
# network namespace tests (which cannot run without root).
unit: kube-tools chromium netns-tools
	TRELLIS_REQUIRE_KUBE=1 TRELLIS_REQUIRE_BROWSER=1 TRELLIS_REQUIRE_NETNS=$$([ "$$(id -u)" = 0 ] && echo 1) TRELLIS_KUBE_BIN_DIR=$(KUBE_DIR) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

test: ui-check lint build kube-tools unit

# Benchmarks: the Go micro benchmarks of the proxy hot path, then trellis-proxy against nginx and
# haproxy on loopback (installs them and wrk when root; writes bench/RESULTS.md and bench/out/).
# BENCH_QUICK=1 shortens the peer comparison to about 2 minutes (full: about 6).
# Sequential even under -j: the micro benchmarks must not share the CPUs with the peer runs.
bench:
	$(MAKE) bench-micro
	$(MAKE) bench-proxy
	$(MAKE) bench-ui
	$(MAKE) bench-controlplane

# The console's render time in headless Chromium at 500 services / 2000 edges.
bench-ui: chromium
	$(GO) test -run '^$$' -bench BenchmarkConsole -benchtime 5x ./internal/ui/uitest/

# The control plane at scale: `trellis controlplane` on a synthetic mesh (1000 services, 2000 ADS
# clients from bench/cmd/xdsload, SotW and delta), again with GOMEMLIMIT=250MiB on the control plane (a
# Deployment with that memory limit), then the same mesh at 2x and 4x (2000 services and 4000
# clients; 4000 services and 8000 clients: about ten minutes on 2 CPUs), then at 1x with the control
# plane pinned to one CPU and the load to another (needs 2 CPUs; taskset from util-linux).
# Loopback only, stops by itself; writes its sections of bench/RESULTS.md and bench/out/cp/.
# BENCH_QUICK=1: a tenth of the size (100 services, 200 clients), a couple of minutes.
ifeq ($(BENCH_QUICK),1)
CP_SCALE_FLAGS = -services 100 -clients 200 -changes 10 -scales 1 -section "quick: 100 services, 200 clients"
CP_LIMIT_FLAGS = -services 100 -clients 200 -changes 10 -scales 1 -memlimit 250MiB -section "quick: 100 services, 200 clients, GOMEMLIMIT"
CP_GROWTH_FLAGS = -services 50 -clients 100 -changes 5 -scale-changes 5 -scales 1,2,4 -section "quick growth"
CP_PINNED_FLAGS = -services 100 -clients 200 -changes 10 -scales 1 -cp-cpus 0 -load-cpus 1 -section "quick: control plane on one CPU"
else
CP_SCALE_FLAGS = -services 1000 -clients 2000 -changes 10 -scales 1 -section "1000 services, 2000 clients"
CP_LIMIT_FLAGS = -services 1000 -clients 2000 -changes 10 -scales 1 -memlimit 250MiB -section "1000 services, 2000 clients, GOMEMLIMIT=250MiB"
CP_GROWTH_FLAGS = -services 1000 -clients 2000 -changes 5 -scale-changes 5 -scales 2,4 -section "growth: 2x and 4x of 1000 services, 2000 clients"
CP_PINNED_FLAGS = -services 1000 -clients 2000 -changes 10 -scales 1 -cp-cpus 0 -load-cpus 1 -section "1000 services, 2000 clients, control plane on one CPU"
endif
bench-controlplane:
	@mkdir -p bench/out
	$(GO) build -tags pprof -o bench/out/trellis ./cmd/trellis
	$(GO) build -o bench/out/xdsload ./bench/cmd/xdsload
	$(GO) build -o bench/out/cpbench ./bench/cmd/cpbench
	bench/out/cpbench $(CP_SCALE_FLAGS) $(BENCH_FLAGS)
	bench/out/cpbench $(CP_LIMIT_FLAGS) $(BENCH_FLAGS)
	bench/out/cpbench $(CP_GROWTH_FLAGS) $(BENCH_FLAGS)
	bench/out/cpbench $(CP_PINNED_FLAGS) $(BENCH_FLAGS)

bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

bench-proxy:
	@mkdir -p bench/out
	$(GO) build -o bench/out/proxybench ./bench/cmd/proxybench
	bench/out/proxybench $(BENCH_FLAGS)

# Short coverage-guided fuzzing of every fuzz target (not part of `make test`).
# Minimising is capped: in packages that link all of Envoy's generated types
# (internal/xds) coverage maps are huge, and one minimisation can take minutes.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
