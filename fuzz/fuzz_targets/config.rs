//! libFuzzer target: `cluster.toml` parsing and validation; any text gives a config or
//! diagnostics, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosboot::fuzzing::config(data));
