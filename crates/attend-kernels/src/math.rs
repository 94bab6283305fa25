//! Scalar math, one copy of each function: the element-wise kernels, the models' activations
//! and the training losses are all built from these. Branch-free where it matters, so that
//! loops over them vectorise (and, compiled inside a `#[target_feature]` kernel, use its
//! registers).

/// `eˣ` for `x ≤ 0`, relative error below 3e-7 (2 ulp), flushing to 0 below -87. Branch-free
/// (round-to-nearest by the 1.5·2²³ trick, a degree-6 polynomial on [-ln2/2, ln2/2], the
/// power of two built in the exponent bits), so that loops over it vectorise.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    // r = x - n·ln2, with ln2 split in two so the product is exact
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // n sits in the low mantissa bits of `shifted`; integer ops only, no float→int conversion
    let ni = shifted.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    p * scale
}

/// The error function to an absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26; a few
/// 1e-7 once evaluated in f32) — far below what f32 activations resolve.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let e = 1.0 - poly * exp_neg(-z * z);
    e.copysign(x)
}

/// `tanh` through [`exp_neg`] (`tanh|z| = (1 - e)/(1 + e)`, `e = exp(-2|z|)`): within 1e-6 of
/// libm's, and loops over it vectorise (libm's `tanhf` was a third of a training step).
#[inline(always)]
pub fn tanh(z: f32) -> f32 {
    let e = exp_neg(-2.0 * z.abs());
    ((1.0 - e) / (1.0 + e)).copysign(z)
}

/// The exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))` (BERT's `"gelu"`).
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `√(2/π)`, of the tanh GELU.
pub const GELU_C: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh GELU.
pub const GELU_A: f32 = 0.044_715;

/// GELU, tanh form (GPT-2's `gelu_new`, Gemma's `gelu_pytorch_tanh`):
/// `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(GELU_C * (x + GELU_A * x * x * x)))
}

/// The derivative of [`gelu_tanh`].
#[inline(always)]
pub fn gelu_tanh_grad(x: f32) -> f32 {
    let t = tanh(GELU_C * (x + GELU_A * x * x * x));
    let dt = (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x);
    0.5 * (1.0 + t) + 0.5 * x * dt
}

/// SiLU (swish), `x · σ(x)`, with libm's `exp` (its argument may be positive).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// An IEEE half-precision number, little-endian bytes, as `f32`.
#[inline(always)]
pub fn f16(bytes: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(bytes).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-1.5, -0.966_105_146_475_310_7),
            (2.5, 0.999_593_047_982_555),
            (4.0, 0.999_999_984_582_742_1),
        ] {
            let got = erf(x as f32) as f64;
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got} vs {want}");
        }
    }

    #[test]
    fn exp_neg_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f64 / 200_000.0;
            let got = exp_neg(x as f32) as f64;
            let want = (x as f32 as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-200.0), exp_neg(-87.0));
    }

    #[test]
    fn tanh_gelu_and_silu_match_libm() {
        for i in -400..=400 {
            let x = i as f32 / 40.0;
            assert!((tanh(x) - x.tanh()).abs() < 1e-6, "tanh({x})");
            if x.abs() <= 3.0 {
                let g = 0.5 * x as f64 * (1.0 + erf_series(x as f64 / std::f64::consts::SQRT_2));
                assert!(
                    (gelu_erf(x) as f64 - g).abs() < 1e-6 * (1.0 + g.abs()),
                    "gelu({x})"
                );
            }
            let s = x as f64 / (1.0 + (-x as f64).exp());
            assert!(
                (silu(x) as f64 - s).abs() < 1e-6 * (1.0 + s.abs()),
                "silu({x})"
            );
            let h = 1e-3f32;
            let num = (gelu_tanh(x + h) - gelu_tanh(x - h)) / (2.0 * h);
            assert!((gelu_tanh_grad(x) - num).abs() < 2e-3, "gelu_tanh'({x})");
        }
        assert_eq!(f16([0x00, 0x3c]), 1.0);
    }

    /// erf in f64 by its Maclaurin series (accurate for |x| ≤ 2.2, where the terms stay small).
    fn erf_series(x: f64) -> f64 {
        let (mut sum, mut term) = (0.0, x);
        for n in 0..80 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
