# The cluster path (docs/cluster.md), included by the Makefile: skaffold against minikube or
# any Knative cluster, and the cluster test tier. Each target first checks what it needs and
# says what is missing, rather than failing deep inside skaffold or kubectl.
#
#   make cluster-dev                                                # minikube
#   make deploy SKAFFOLD_PROFILES=registry IMAGE_REPO=ghcr.io/you   # a cluster with a registry

# Where the image goes (skaffold --default-repo). dev.local: built into the local cluster's
# own Docker daemon and never pushed; Knative skips tag-to-digest resolution for that prefix
# (registries-skipping-tag-resolving in config-deployment), so the Revisions can start.
IMAGE_REPO ?= dev.local
SKAFFOLD_PROFILES ?=
SKAFFOLD_FLAGS ?=
SKAFFOLD_ARGS = --default-repo=$(IMAGE_REPO) $(if $(SKAFFOLD_PROFILES),-p $(SKAFFOLD_PROFILES)) $(SKAFFOLD_FLAGS)
KUBE_CONTEXT = $(shell kubectl config current-context 2>/dev/null)
CLUSTER_DOCS := docs/cluster.md

.PHONY: cluster-dev deploy undeploy test-cluster cluster-check cluster-features

cluster-dev: cluster-features models ## skaffold dev on minikube: build the image, deploy knative/ and eventing/, redeploy on change
	skaffold dev $(SKAFFOLD_ARGS)

deploy: cluster-features models ## build the image once and deploy every Service, Broker and Trigger (skaffold run)
	skaffold run $(SKAFFOLD_ARGS)

undeploy: cluster-check ## delete everything deploy created (skaffold delete)
	skaffold delete $(SKAFFOLD_ARGS)

test-cluster: models ## end-to-end tests against the Services deployed in the current kube context
	$(PY) -m pytest -m cluster tests/cluster

# The tools, a cluster that answers, Knative in it, and an image repository it can use.
cluster-check:
	@command -v skaffold >/dev/null || { echo >&2 "skaffold not found on PATH: install skaffold v2.24.0 ($(CLUSTER_DOCS), Tools)"; exit 1; }
	@command -v kubectl >/dev/null || { echo >&2 "kubectl not found on PATH: install kubectl ($(CLUSTER_DOCS), Tools)"; exit 1; }
	@test -n "$(KUBE_CONTEXT)" || { echo >&2 "no kube context: start a cluster with 'minikube start' ($(CLUSTER_DOCS), A cluster)"; exit 1; }
	@kubectl version --request-timeout=5s >/dev/null 2>&1 || { echo >&2 "no Kubernetes API server answers for kube context '$(KUBE_CONTEXT)': is the cluster running? (minikube status)"; exit 1; }
	@kubectl get crd services.serving.knative.dev >/dev/null 2>&1 || { echo >&2 "Knative Serving is not installed in kube context '$(KUBE_CONTEXT)' ($(CLUSTER_DOCS), Knative)"; exit 1; }
	@case ",$(SKAFFOLD_PROFILES)," in *,serving-only,*) ;; *) kubectl get crd brokers.eventing.knative.dev >/dev/null 2>&1 || { echo >&2 "Knative Eventing is not installed in kube context '$(KUBE_CONTEXT)': install it ($(CLUSTER_DOCS), Knative) or deploy knative/ alone with SKAFFOLD_PROFILES=serving-only"; exit 1; } ;; esac
	@# dev.local images exist only in the local Docker daemon: a remote cluster cannot run them
	@if [ "$(IMAGE_REPO)" = dev.local ]; then case "$(KUBE_CONTEXT)" in minikube|docker-desktop|kind-*|k3d-*) ;; *) echo >&2 "IMAGE_REPO=dev.local works only on a local cluster (minikube, kind, Docker Desktop), not in kube context '$(KUBE_CONTEXT)': use SKAFFOLD_PROFILES=registry IMAGE_REPO=<your registry>"; exit 1 ;; esac; fi

# What a deploy needs of Knative Serving's features beyond the defaults.
cluster-features: cluster-check
	@for feature in kubernetes.podspec-persistent-volume-claim kubernetes.podspec-persistent-volume-write; do \
	  test "$$(kubectl -n knative-serving get configmap config-features -o "jsonpath={.data['$${feature//./\\.}']}" 2>/dev/null)" = enabled || { echo >&2 "Knative Serving's $$feature feature is off: prediction-log-dead-letter mounts its spool volume with it (enable both: $(CLUSTER_DOCS), Knative)"; exit 1; }; \
	done
