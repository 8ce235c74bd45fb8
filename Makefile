# nodekeeper — see README.md. `make test` is what CI runs (.ci/run).
SHELL := /usr/bin/env bash
NK_CACHE ?= $(HOME)/.cache/nodekeeper
export NK_CACHE
VERSION ?= v0.1.0-dev
LDFLAGS := -X github.com/nodekeeper/nodekeeper/internal/version.Version=$(VERSION)
GO ?= go
# the network namespace the tests' containerd (hack/cri-up.sh) and its pods live in
TEST_NETNS ?= nk-test

.PHONY: all build test test-unit vet run down clean manifests bench-pods conformance

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
## test's CSR approver and signer) into $(NK_CACHE)/k8s and metrics-server (the e2e cluster's, for kubectl top; built here,
## outside go test's timeout) into $(NK_CACHE)/tools, then runs every suite
test: vet
	hack/net-deps.sh
	hack/metrics-server.sh >/dev/null
	@assets=$$(K8S_EXTRA_BINS="kube-controller-manager kube-scheduler" hack/k8s-bins.sh) && export KUBEBUILDER_ASSETS="$$assets" && \
	  echo "KUBEBUILDER_ASSETS=$$assets" && \
	  ep=$$(NK_CACHE=$(NK_CACHE)/test NK_NETNS=$(TEST_NETNS) hack/cri-up.sh) && \
	  export NK_CRI_ENDPOINT="$$ep" NK_CRI_NETNS=$(TEST_NETNS) && \
	  trap 'NK_CACHE=$(NK_CACHE)/test NK_NETNS=$(TEST_NETNS) hack/cri-down.sh' EXIT && \
	  $(GO) test -count=1 -timeout 40m ./...

## test-unit: the suites that need no control plane, root or containerd
test-unit:
	$(GO) test -count=1 ./api/... ./internal/... ./host/... ./runtime/... ./netrules/...

## bench-pods: pod start-up latency on real containerd (30 pods; NK_BENCH_PODS=N)
bench-pods:
	@assets=$$(hack/k8s-bins.sh) && export KUBEBUILDER_ASSETS="$$assets" && \
	  ep=$$(NK_CACHE=$(NK_CACHE)/test NK_NETNS=$(TEST_NETNS) hack/cri-up.sh) && \
	  trap 'NK_CACHE=$(NK_CACHE)/test NK_NETNS=$(TEST_NETNS) hack/cri-down.sh' EXIT && \
	  NK_BENCH=1 NK_CRI_ENDPOINT="$$ep" $(GO) test -count=1 -v -run TestPodStartupLatency ./test/podbench/ | grep -v '^=== RUN'

## conformance: upstream's node conformance suite (e2e_node.test v1.37.2, [NodeConformance])
## against a cluster of its own whose node is nodekeeper; NODE=kubelet runs it against the
## upstream kubelet instead (the baseline). Not part of `make test`. Selection: FOCUS=regex,
## SKIP=regex, SPECS=file of spec names, SHARDS=N parallel processes; KEEP=1 leaves the
## cluster up. Summary and JUnit under $(NK_CACHE)/conformance/results (see hack/conformance.sh)
conformance: build
	hack/conformance.sh all

## run: a local single-node cluster whose node is nodekeeper (prints the kubeconfig)
run:
	hack/run.sh up

## down: stop what `make run` started and remove its network namespace
down:
	hack/run.sh down

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
