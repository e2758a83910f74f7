//! Rows of class scores: softmax, cross-entropy, the most probable labels. Pure functions,
//! one definition each, shared by training, evaluation, reports and the server.

/// `log(sum(exp(row)))`, computed stably in f64 (the largest score is taken out first).
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = f64::from(row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)));
    row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln() + max
}

/// Softmax of one row of logits: class probabilities that sum to one.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let log_sum = log_sum_exp(row);
    row.iter().map(|&v| (f64::from(v) - log_sum).exp() as f32).collect()
}

/// `-log softmax(row)[label]`, the cross-entropy of one row of logits against its label.
pub fn cross_entropy(row: &[f32], label: usize) -> f64 {
    log_sum_exp(row) - row.get(label).copied().map_or(f64::NAN, f64::from)
}

/// The label with the highest score; the first on ties.
pub fn argmax(scores: &[f32]) -> usize {
    scores.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &p)| if p > best.1 { (i, p) } else { best }).0
}

/// The `k` most probable labels with their probabilities, most probable first.
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
        // e^1 / (e^1 + e^2 + e^3)
        assert!((p[0] - 0.090_030_57).abs() < 1e-6);
        // Large logits stay finite.
        assert_eq!(softmax(&[1000.0, 0.0]), vec![1.0, 0.0]);
    }

    #[test]
    fn cross_entropy_matches_hand_values() {
        // Uniform logits over 4 classes: ln 4.
        assert!((cross_entropy(&[1.0; 4], 2) - 4f64.ln()).abs() < 1e-9);
        // softmax([0, ln 3]) = [0.25, 0.75]
        assert!((cross_entropy(&[0.0, 3f32.ln()], 1) - (-(0.75f64).ln())).abs() < 1e-6);
        // Large logits stay finite.
        assert!(cross_entropy(&[1000.0, 0.0], 0).abs() < 1e-9);
        // The loss is the softmax's negative log, one definition for both.
        let row = [0.3, -1.2, 2.5];
        assert!((cross_entropy(&row, 0) + f64::from(softmax(&row)[0]).ln()).abs() < 1e-6);
    }

    #[test]
    fn argmax_and_top_k_rank_by_probability() {
        let p = [0.1, 0.5, 0.05, 0.35];
        assert_eq!(argmax(&p), 1);
        assert_eq!(argmax(&[0.5, 0.5]), 0, "ties go to the first");
        assert_eq!(top_k(&p, 2), vec![(1, 0.5), (3, 0.35)]);
        assert_eq!(top_k(&p, 9).len(), 4);
    }
}
