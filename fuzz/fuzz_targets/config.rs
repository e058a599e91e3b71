//! Fuzz target `config`: see `balancer::fuzzing::config` for its invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balancer::fuzzing::config(data));
