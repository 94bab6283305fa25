//! The GGUF reader on arbitrary bytes: it must return, never panic or read out of bounds.
//!
//!     cargo +nightly fuzz run gguf -- -max_total_time=600
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = attend_models::formats::gguf::Gguf::parse(data) {
        // what a loader does next: look at values and tensor ranges
        for t in &g.tensors {
            assert!(t.start + t.len <= data.len());
            let _ = t.matrix();
        }
        for v in g.metadata.values() {
            let _ = (v.as_u64(), v.as_f64(), v.as_str(), v.as_array());
        }
    }
});
