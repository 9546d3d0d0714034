//! Protocol-faithful local Kubernetes API server (work in progress).
