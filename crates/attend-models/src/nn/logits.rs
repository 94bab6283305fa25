//! What is done with a row of logits: log-sum-exp, softmax, log-probabilities, argmax and
//! top-k. One copy each, for the sampler, the losses and the CLI.

/// `ln Σ exp(row)`, as `max + ln Σ exp(v − max)` in f32 (what the training loss computes).
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
    max + sum.ln()
}

/// `log softmax(logits)[id]`.
pub fn logprob(logits: &[f32], id: u32) -> f32 {
    logits[id as usize] - log_sum_exp(logits)
}

/// `softmax(row)`.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let mut p = vec![0.0; row.len()];
    softmax_into(row, &mut p);
    p
}

/// `out = softmax(row)` (as `exp(v − log_sum_exp(row))`); returns the log-sum-exp.
pub fn softmax_into(row: &[f32], out: &mut [f32]) -> f32 {
    let lse = log_sum_exp(row);
    for (o, v) in out.iter_mut().zip(row) {
        *o = (v - lse).exp();
    }
    lse
}

/// The index of the largest value (the first, on ties; 0 for an empty row).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// Every index, largest value first (a stable order: ties keep index order).
pub fn ranked(row: &[f32]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    idx
}

/// The `k` largest values with their indices, largest first.
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx = ranked(row);
    idx.truncate(k);
    idx.into_iter()
        .map(|i| (i as usize, row[i as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        let l = [1.0f32, 3.0, 2.0, 3.0];
        let s = softmax(&l);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let z: f64 = l.iter().map(|&v| (v as f64).exp()).sum();
        assert!((logprob(&l, 1) as f64 - (3.0 - z.ln())).abs() < 1e-6);
        assert_eq!(argmax(&l), 1);
        assert_eq!(top_k(&l, 3), vec![(1, 3.0), (3, 3.0), (2, 2.0)]);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY, 0.0]), 0.0);
    }
}
