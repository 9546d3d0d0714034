//! Sources: watchers of the Kubernetes API that turn objects into records on the ingest ring.

pub mod decode;
