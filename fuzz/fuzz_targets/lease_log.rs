//! libFuzzer target: `netboot::fuzzing::lease_log` (see there for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot::fuzzing::lease_log(data));
