//! Fuzz target `own_request_head`: see `balancer::fuzzing::own_request_head` for its invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balancer::fuzzing::own_request_head(data));
