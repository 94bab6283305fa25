//! Deterministic test data for the kernel suites of every crate (not for models: their one
//! random generator is `attend_models::rng`).

/// `n` values uniform in [-0.5, 0.5) from a 32-bit xorshift seeded by `seed`.
pub fn uniform(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}
