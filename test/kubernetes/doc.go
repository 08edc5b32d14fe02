// Package kubernetes tests deploy/kubernetes: the kustomize base and its
// overlay are rendered with the kustomize Go API, every object is decoded
// strictly into its k8s.io/api type, and what a deployment relies on
// (probes, budgets, selectors, drain times) is checked. The NATS Helm
// values are checked for the durability docs/operations.md promises.
package kubernetes
