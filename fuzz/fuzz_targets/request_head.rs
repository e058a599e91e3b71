//! Fuzz target `request_head`: see `balancer::fuzzing::request_head` for its invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balancer::fuzzing::request_head(data));
