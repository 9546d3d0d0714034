//! What herald's tests and harnesses share to observe a running agent from the outside: a minimal HTTP probe,
//! a reader of the Prometheus text format and `/proc` sampling. It is never a dependency of the agent itself
//! (only of its tests), and it must not know herald's types: it reads what a scraper or an operator would.

pub mod probe;
