//! Accuracy, per-class accuracy, the confusion matrix and the most confused pairs:
//! pure functions of true and predicted labels (scores and probabilities: [`crate::scores`]).

use serde::Serialize;

/// Accuracy of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: String,
    /// Images of this class.
    pub n: u64,
    /// Of those, predicted as this class.
    pub correct: u64,
    /// `correct / n`; 0 for a class with no images.
    pub accuracy: f64,
}

/// Images of class `truth` predicted as `predicted`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfusedPair {
    pub truth: String,
    pub predicted: String,
    pub count: u64,
}

/// The evaluation of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Images evaluated.
    pub n: u64,
    /// Fraction predicted correctly.
    pub accuracy: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[truth][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Off-diagonal cells, most frequent first.
    pub most_confused: Vec<ConfusedPair>,
}

/// Compares `predictions` with `targets` (label indices into `classes`).
///
/// Labels outside `classes` are ignored by the matrix; callers pass labels from one
/// dataset and one model, so there are none.
pub fn evaluate(classes: &[String], targets: &[u8], predictions: &[u8]) -> Evaluation {
    let k = classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&t, &p) in targets.iter().zip(predictions) {
        if let Some(cell) = confusion.get_mut(usize::from(t)).and_then(|row| row.get_mut(usize::from(p))) {
            *cell += 1;
        }
    }
    let n: u64 = confusion.iter().flatten().sum();
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let per_class = classes
        .iter()
        .enumerate()
        .map(|(i, class)| {
            let n: u64 = confusion[i].iter().sum();
            ClassAccuracy { class: class.clone(), n, correct: confusion[i][i], accuracy: ratio(confusion[i][i], n) }
        })
        .collect();
    let mut most_confused: Vec<ConfusedPair> = (0..k)
        .flat_map(|t| (0..k).map(move |p| (t, p)))
        .filter(|&(t, p)| t != p && confusion[t][p] > 0)
        .map(|(t, p)| ConfusedPair { truth: classes[t].clone(), predicted: classes[p].clone(), count: confusion[t][p] })
        .collect();
    // Stable sort: ties keep (truth, predicted) order, so output is deterministic.
    most_confused.sort_by_key(|pair| std::cmp::Reverse(pair.count));
    Evaluation { n, accuracy: ratio(correct, n), per_class, confusion, most_confused }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn hand_worked_confusion() {
        // truth:      0 0 0 1 1 2
        // predicted:  0 1 1 1 0 2
        let e = evaluate(&names(3), &[0, 0, 0, 1, 1, 2], &[0, 1, 1, 1, 0, 2]);
        assert_eq!(e.n, 6);
        assert_eq!(e.confusion, vec![vec![1, 2, 0], vec![1, 1, 0], vec![0, 0, 1]]);
        assert!((e.accuracy - 3.0 / 6.0).abs() < 1e-12);
        assert!((e.per_class[0].accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.per_class[1].correct, 1);
        assert_eq!(e.per_class[2].accuracy, 1.0);
        assert_eq!(e.most_confused[0], ConfusedPair { truth: "c0".into(), predicted: "c1".into(), count: 2 });
        assert_eq!(e.most_confused[1], ConfusedPair { truth: "c1".into(), predicted: "c0".into(), count: 1 });
        assert_eq!(e.most_confused.len(), 2);
    }

    #[test]
    fn empty_class_has_zero_accuracy_not_nan() {
        let e = evaluate(&names(2), &[0], &[0]);
        assert_eq!(e.per_class[1].n, 0);
        assert_eq!(e.per_class[1].accuracy, 0.0);
    }
}
