//! Fuzz target `upstream`: see `balancer::fuzzing::upstream` for its invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balancer::fuzzing::upstream(data));
