# nodekeeper — see README.md. `make test` is what CI runs (.ci/run).
SHELL := /usr/bin/env bash
NK_CACHE ?= $(HOME)/.cache/nodekeeper
export NK_CACHE
VERSION ?= v0.1.0-dev
# --version's commit and build date. The date is SOURCE_DATE_EPOCH's, by default the
# commit's time (reproducible builds: the same tree links to the same binary, and an
# unchanged tree is not relinked); BUILD_DATE=$$(date -u +%FT%TZ) stamps the wall clock.
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
BUILD_DATE ?= $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
VERSION_PKG := github.com/nodekeeper/nodekeeper/internal/version
LDFLAGS := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT) -X $(VERSION_PKG).BuildDate=$(BUILD_DATE)
GO ?= go
# the network namespace the tests' containerd (hack/cri-up.sh) and its pods live in
TEST_NETNS ?= nk-test

.PHONY: all build test test-unit vet run down clean manifests bench-pods conformance fault soak image load-image

all: build

## build: the agent binary in bin/nodekeeper
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/nodekeeper .

## vet: go vet and a gofmt check
vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## test: everything, on a fresh machine too: builds (cached) kube-apiserver/etcd/kubectl
## (and kube-controller-manager, kube-scheduler: the e2e cluster's, and the TLS bootstrap
## test's CSR approver and signer) into $(NK_CACHE)/k8s, metrics-server (the e2e cluster's,
## for kubectl top) and CoreDNS (the clusters' DNS) into $(NK_CACHE)/tools, outside go
## test's timeout, then runs every suite
test: vet
	hack/net-deps.sh
	hack/metrics-server.sh >/dev/null
	hack/coredns.sh >/dev/null
	@assets=$$(K8S_EXTRA_BINS="kube-controller-manager kube-scheduler" hack/k8s-bins.sh) && export KUBEBUILDER_ASSETS="$$assets" && \
	  echo "KUBEBUILDER_ASSETS=$$assets" && \
	  ep=$$(NK_CACHE=$(NK_CACHE)/test NK_NETNS=$(TEST_NETNS) hack/cri-up.sh) && \
	  export NK_CRI_ENDPOINT="$$ep" NK_CRI_NETNS=$(TEST_NETNS) && \
	  trap 'NK_CACHE=$(NK_CACHE)/test NK_NETNS=$(TEST_NETNS) hack/cri-down.sh' EXIT && \
	  $(GO) test -count=1 -timeout 40m ./...

## test-unit: the suites that need no control plane, root or containerd
test-unit:
	$(GO) test -count=1 ./api/... ./internal/... ./host/... ./runtime/... ./netrules/...

## bench-pods: pod start-up, upstream kubelet v1.37.2 vs nodekeeper on the same API server
## and containerd (hack/bench-pods.sh; NK_BENCH_PODS=N burst size, default 30): start → node
## Ready, 10 single pods, a burst, delete → gone, peak RSS, per-phase breakdown
bench-pods: build
	hack/bench-pods.sh

## conformance: upstream's node conformance suite (e2e_node.test v1.37.2, [NodeConformance])
## against a cluster of its own whose node is nodekeeper; NODE=kubelet runs it against the
## upstream kubelet instead (the baseline). Not part of `make test`. Selection: FOCUS=regex,
## SKIP=regex, SPECS=file of spec names, SHARDS=N parallel processes; KEEP=1 leaves the
## cluster up. Summary and JUnit under $(NK_CACHE)/conformance/results (see hack/conformance.sh)
conformance: build
	hack/conformance.sh all

## fault: the reliability suite (test/fault) with its long cases too: 60 s containerd and
## API server outages, 20 rollouts under traffic (`make test` runs the short cases). Its own
## cluster (hack/run.sh, netns nk-flt); figures in $(NK_CACHE)/flt/figures.txt
fault: build
	NK_FAULT_LONG=1 $(GO) test -count=1 -timeout 60m -v ./test/fault/ -args -ginkgo.label-filter=fault

## soak: pods and Services created and deleted continuously for NK_SOAK (30m) on the fault
## suite's cluster: RSS and goroutine slopes, leftovers of deleted pods
NK_SOAK ?= 30m
soak: build
	NK_SOAK=$(NK_SOAK) $(GO) test -count=1 -timeout 120m -v ./test/fault/ -args -ginkgo.focus=soak

## run: a local single-node cluster whose node is nodekeeper (prints the kubeconfig)
run:
	hack/run.sh up

## down: stop what `make run` started and remove its network namespace
down:
	hack/run.sh down

## image: the agent's container image as a tarball, no Docker daemon needed (IMAGE_TAR,
## default bin/nodekeeper-image.tar; IMAGE_NAME:VERSION names it): an OCI layout that is
## also a `docker save` archive, with the static binary and Debian's iptables/nftables tools
IMAGE_NAME ?= docker.io/nodekeeper/nodekeeper
IMAGE_TAR ?= $(CURDIR)/bin/nodekeeper-image.tar
image: build
	@IMAGE_NAME=$(IMAGE_NAME) VERSION=$(VERSION) IMAGE_TAR=$(IMAGE_TAR) hack/image.sh >/dev/null

## load-image: import an image tarball into the `make run` cluster's containerd
## (IMAGE=path/to/image.tar; default: make image's)
IMAGE ?= $(IMAGE_TAR)
load-image:
	hack/run.sh load-image $(IMAGE)

CONTROLLER_GEN := $(NK_CACHE)/tools/controller-gen
$(CONTROLLER_GEN):
	GOBIN=$(NK_CACHE)/tools $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0

## manifests: regenerate config/rbac/role.yaml from the +kubebuilder:rbac markers
manifests: $(CONTROLLER_GEN)
	$(CONTROLLER_GEN) rbac:roleName=nodekeeper paths="./controllers/..." output:rbac:artifacts:config=config/rbac
	cp config/rbac/role.yaml charts/nodekeeper/files/role.yaml

clean:
	rm -rf bin

## helm: build the helm CLI from the Go module proxy (cached) into $(NK_CACHE)/tools/helm.
## The chart's tests (test/helm, run by `make test`) call hack/helm.sh themselves.
HELM := $(NK_CACHE)/tools/helm
.PHONY: helm controller-gen helm-lint
helm:
	@hack/helm.sh >/dev/null

## controller-gen: build controller-gen (cached); test/helm uses it to check config/rbac/role.yaml
controller-gen: $(CONTROLLER_GEN)

## helm-lint: lint the chart in charts/nodekeeper
helm-lint: helm
	$(HELM) lint --strict charts/nodekeeper

## bench: Service proxy figures as root, nodekeeper vs upstream kube-proxy v1.37.2 in the
## same run (change latency API write → kernel, CPU per change, RSS, first sync, kernel
## objects) for 1000/10000/50000 Services × 5 endpoints, nftables and iptables-nft;
## BENCH_SIZES=1000 for a quick run (knobs in hack/bench.sh)
.PHONY: bench
bench:
	hack/bench.sh
