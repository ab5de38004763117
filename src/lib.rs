//! ama-migrator: migrate Azure VMs and Arc servers from the Log Analytics agent (MMA/OMS) to the
//! Azure Monitor Agent, keeping every data source on every machine sent by exactly one agent.
//!
//! Layout (design.md §9): `api` (CRD types), `catalog` (the seed's gap tables as data), `plan` (pure
//! planner), `azure` (the one ARM client), `sim` (the Azure simulator), `contract` (validation of
//! wire bodies against Microsoft's REST specs), `inventory` (the fleet as Resource Graph and Log
//! Analytics report it), `cli` (command wiring).

pub mod api;
pub mod azure;
pub mod catalog;
pub mod cli;
pub mod contract;
pub mod engine;
pub mod input_files;
pub mod inventory;
pub mod local;
pub mod machine;
pub mod operator;
pub mod plan;
pub mod sim;

/// The `User-Agent` of every request to Kubernetes and Azure: `ama-migrator/<version>`.
pub const USER_AGENT: &str = concat!("ama-migrator/", env!("CARGO_PKG_VERSION"));
