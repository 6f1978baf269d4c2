//! mosboot: from one `cluster.toml` to a network-booting openMosix cluster of old PCs.
//!
//! Data flows one way: [`config`] -> [`plan`] -> (the image [`pipeline`], the servers in `serve`).
//! The binary (`main.rs`) only parses arguments and maps [`error::Failure`] to exit codes.

pub mod check;
pub mod cli;
pub mod config;
pub mod diag;
pub mod duration;
pub mod error;
pub mod export;
pub mod floppy;
#[doc(hidden)]
pub mod fuzzing;
pub mod hostname;
pub mod init;
pub mod kernel_config;
pub mod manifest;
pub mod map;
pub mod nodes;
pub mod pipeline;
pub mod plan;
pub mod privilege;
pub mod reload;
pub mod render;
pub mod root;
pub mod sd_notify;
pub mod serve;
pub mod status;
#[cfg(test)]
mod testdata;
