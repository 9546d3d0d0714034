//! Sources: watchers of the Kubernetes API that turn objects into records on the ingest ring.

pub mod accounting;
pub mod config;
pub mod decode;
pub mod events;
pub mod kubevirt;
pub mod vm_lifecycle;
pub mod watch;
