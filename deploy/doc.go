// Package deploy holds what an operator applies — the image recipe
// (docker/), the Kubernetes manifests (k8s/), the Prometheus configuration
// and alerts (prometheus/) and the Grafana dashboard (grafana/) — and the
// tests that check them with the real tools: kubectl kustomize, strict
// decoding into the Kubernetes API types, promtool, and a real Prometheus
// scraping a real daemon. It has no Go code of its own.
package deploy
