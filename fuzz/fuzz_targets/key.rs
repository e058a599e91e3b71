//! Fuzz target `key`: see `balancer::fuzzing::key` for its invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balancer::fuzzing::key(data));
