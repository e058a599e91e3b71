//! Fuzz target `headers`: see `balancer::fuzzing::headers` for its invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balancer::fuzzing::headers(data));
