//! Kubernetes Events herald records about itself, on its own Pod.

/// herald's reporting controller on the Events it records (and how its pipeline recognises them).
pub const CONTROLLER: &str = "herald";
