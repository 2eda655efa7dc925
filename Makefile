# Pravega -> Flink TaskManager autoscaling. `make help` lists the targets.

CARGO   ?= cargo
KUBECTL ?= kubectl
IMAGE_REPO ?= ghcr.io/pravega-flink-autoscaler
# Cargo profile of the images' binaries: release for make images, as users
# run them; make test builds its images from the dev binaries it has built
# anyway (scripts/images.sh).
IMAGE_PROFILE ?= release
VERSION ?= 0.1.0
# make run (scripts/run.sh): where the simulated controller and the adapter
# listen. It builds the generator without its `pravega` feature (the
# simulator needs no pravega-client), so target/*/generator runs only
# --simulate until the next full build (make build, make test).
SIM_ADDR     ?= 127.0.0.1:10080
ADAPTER_ADDR ?= 127.0.0.1:8080
# Cargo profile for make run: dev builds cold in under two minutes on 2
# cores, release (LTO) takes several; binaries land in target/debug for dev.
PROFILE ?= dev
BIN = target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
EXTERNAL_QUERY = /apis/external.metrics.k8s.io/v1beta1/namespaces/default/pravega_controller_segments_count?labelSelector=scope%3Dtest,stream%3Dstream
CUSTOM_QUERY = /apis/custom.metrics.k8s.io/v1beta2/namespaces/default/deployments.apps/flink-taskmanager/pravega_controller_segments_count?metricLabelSelector=scope%3Dtest

.PHONY: help build run run-check test test-unit test-chart test-e2e test-node test-keda test-pravega test-loop loop-chart bench bench-baseline bench-baseline-serving lint deploy deploy-cert-manager deploy-pravega serving-cert hpa-external hpa-object images images-docker test-images

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

build: ## release build of the adapter, generator and flink-reader
	$(CARGO) build --release --locked --workspace

run: ## adapter + simulated Pravega controller on localhost, no cluster needed
	$(CARGO) build --profile $(PROFILE) --locked -p pravega-metrics-adapter -p generator --no-default-features
	@exec env BIN='$(BIN)' SIM_ADDR='$(SIM_ADDR)' ADAPTER_ADDR='$(ADAPTER_ADDR)' KUBECTL='$(KUBECTL)' RUN_CHECK='$(RUN_CHECK)' \
	  EXTERNAL_QUERY='$(EXTERNAL_QUERY)' CUSTOM_QUERY='$(CUSTOM_QUERY)' scripts/run.sh

run-check: ## make run's printed queries, checked (part of make test)
	$(MAKE) --no-print-directory run RUN_CHECK=1 SIM_ADDR=127.0.0.1:18081 ADAPTER_ADDR=127.0.0.1:18080

test: ## the whole suite: lint, unit, integration, images, manifests, Helm chart, real Pravega, real-control-plane e2e on its node, the whole loop on Pravega with the project's pods, and its chart
	tests/prerequisites.sh
	$(MAKE) --no-print-directory lint
	$(CARGO) test --workspace --locked
	$(MAKE) --no-print-directory run-check
	BIN=target/debug tests/clock_step.sh
	CARGO='$(CARGO)' IMAGE_PROFILE=dev tests/images/run.sh
	$(MAKE) --no-print-directory test-chart
	tests/pravega/run.sh
	E2E_NODE=1 tests/e2e/run.sh
	tests/e2e/node-check.sh
	LOOP_SOURCE=pravega LOOP_HPA_SYNC=15s tests/e2e/loop.sh
	$(MAKE) --no-print-directory loop-chart

test-unit: ## cargo tests only (no root needed)
	$(CARGO) test --workspace --locked

test-images: ## only the images (root): make images, then their files, user and libraries checked, and the binaries run from them
	tests/prerequisites.sh
	CARGO='$(CARGO)' IMAGE_PROFILE='$(IMAGE_PROFILE)' tests/images/run.sh

test-chart: ## the Helm chart: README generated from values.yaml, helm lint and template, equal to the kustomize manifests (the first run builds helm into ~/.cache/pravega-flink-autoscaler)
	KUBECTL='$(KUBECTL)' tests/chart/run.sh

test-e2e: ## only the end-to-end test (root; the first run builds Kubernetes and etcd into ~/.cache/pravega-flink-autoscaler)
	tests/e2e/run.sh

test-node: ## only the e2e control plane's real node: kubelet, containerd, runc, kube-proxy, a pod from a local image (root; the first run builds them into ~/.cache/pravega-flink-autoscaler)
	tests/e2e/node-check.sh

test-keda: ## a real KEDA 2.20.2 (operator, metrics server; built once into ~/.cache/pravega-flink-autoscaler) scales flink-taskmanager from the adapter's external scaler on the e2e control plane, push and poll (root; ~21 min, the first KEDA build ~30 min more); figures in target/keda
	tests/keda/run.sh

test-pravega: ## only the workload and adapter against a real Pravega 0.13, two controllers (root, JDK, Maven; ~6 min, ~8 the first time)
	tests/pravega/run.sh

test-loop: ## the whole loop on the e2e control plane and its node (root): Pravega -> the adapter's pods -> HPA (15 s sync) -> flink-reader pods, then a simulated stream at 15 s and 3 s sync (~17 min); series and charts in target/loop
	LOOP_SOURCE=pravega LOOP_HPA_SYNC=15s tests/e2e/loop.sh
	LOOP_SOURCE=simulate LOOP_HPA_SYNC=15s tests/e2e/loop.sh
	LOOP_SOURCE=simulate LOOP_HPA_SYNC=3s tests/e2e/loop.sh
	$(MAKE) --no-print-directory loop-chart

loop-chart: ## target/loop/loop-*.tsv to SVG and PNG charts (tests/loop-chart, plotters; needs fonts-dejavu-core)
	tests/prerequisites.sh
	CARGO_TARGET_DIR=target/loop-chart $(CARGO) build --release --locked --manifest-path tests/loop-chart/Cargo.toml
	for series in target/loop/loop-*.tsv; do \
	  run=$$(basename $$series .tsv); run=$${run#loop-}; \
	  source=$$(echo $${run%-*} | sed 's/^pravega$$/Pravega 0.13/; s/^simulate$$/Simulated controller/'); \
	  target/loop-chart/release/loop-chart --title "$$source: segments -> adapter -> HPA (sync $${run##*-}) -> TaskManagers" $$series $${series%.tsv} || exit 1; \
	done

bench: ## parse, scrape-round, query and serving benchmarks (figures in README)
	$(CARGO) bench --bench parse --bench scrape_round --bench query
	$(CARGO) bench --bench serving

bench-baseline: ## Prometheus + prometheus-adapter (demo and corrected rules) vs the adapter behind one HPA on a real control plane (root; report in target/baseline/report.md)
	command -v prometheus >/dev/null || { apt-get update && apt-get install -y --no-install-recommends prometheus; }
	benches/baseline/run.sh

bench-baseline-serving: ## the serving benchmark's load against the adapter and Prometheus alone, in one run (installs prometheus)
	command -v prometheus >/dev/null || { apt-get update && apt-get install -y --no-install-recommends prometheus; }
	$(CARGO) bench --bench baseline_prometheus

lint: ## formatting and clippy
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

deploy: ## adapter + workload, APIServices, serving cert (current kubectl context)
	$(KUBECTL) apply -k manifests/
	$(KUBECTL) apply -k apiservice/
	apiservice/gen-serving-cert.sh

deploy-cert-manager: ## same, with cert-manager issuing the serving cert
	$(KUBECTL) apply -k manifests/
	$(KUBECTL) apply -k apiservice/cert-manager/

deploy-pravega: ## Pravega cluster CRs (needs the zookeeper/bookkeeper/pravega operators)
	$(KUBECTL) apply -k manifests/pravega/

serving-cert: ## (re)generate the serving cert and patch the APIServices' caBundle
	apiservice/gen-serving-cert.sh

hpa-external hpa-object: ## apply one HPA form (never both)
	$(KUBECTL) apply -f hpa/flink-taskmanager-$(@:hpa-%=%).yaml

images: ## OCI archives of the three images in target/images/ (root): FROM scratch with buildah, no registry, no daemon; reused while their inputs are unchanged
	tests/prerequisites.sh
	CARGO='$(CARGO)' IMAGE_REPO='$(IMAGE_REPO)' VERSION='$(VERSION)' IMAGE_PROFILE='$(IMAGE_PROFILE)' scripts/images.sh

images-docker: ## the same images with a Docker engine, pulling the build's base images from a registry
	for t in adapter generator flink-reader; do \
	  name=$$t; [ $$t = adapter ] && name=pravega-metrics-adapter; \
	  docker build -f manifests/docker/Dockerfile --target $$t -t $(IMAGE_REPO)/$$name:$(VERSION) . || exit 1; \
	done
