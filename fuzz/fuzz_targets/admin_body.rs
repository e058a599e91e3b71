//! Fuzz target `admin_body`: see `balancer::fuzzing::admin_body` for its invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balancer::fuzzing::admin_body(data));
