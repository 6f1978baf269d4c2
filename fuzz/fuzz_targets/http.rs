//! libFuzzer target: `netboot::fuzzing::http` (see there for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot::fuzzing::http(data));
