//! The Keras-style model summary: one row per layer, output shape, parameters, total.

use std::fmt;

/// One layer of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    /// Layer name and type.
    pub layer: String,
    /// Output shape without the batch dimension.
    pub output_shape: Vec<usize>,
    /// Trainable parameters of the layer.
    pub params: usize,
}

impl LayerRow {
    /// A row; `output_shape` excludes the batch dimension.
    pub fn new(layer: &str, output_shape: impl Into<Vec<usize>>, params: usize) -> Self {
        LayerRow { layer: layer.to_string(), output_shape: output_shape.into(), params }
    }
}

/// A model's layer table, printed like Keras's `model.summary()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// The layers, input to output.
    pub rows: Vec<LayerRow>,
    /// Of the rows' parameters, those no optimiser step changes (BatchNorm's running
    /// statistics, fixed filters), counted as Keras counts them.
    pub non_trainable: usize,
}

impl Summary {
    /// A summary of `rows` for the model called `model`.
    pub fn new(model: &str, rows: Vec<LayerRow>) -> Self {
        Summary { model: model.to_string(), rows, non_trainable: 0 }
    }

    /// This summary, with `n` of its parameters marked non-trainable.
    pub fn with_non_trainable(self, n: usize) -> Self {
        Summary { non_trainable: n, ..self }
    }

    /// Sum of the parameters of every layer.
    pub fn total_params(&self) -> usize {
        self.rows.iter().map(|r| r.params).sum()
    }
}

/// Formats `n` with thousands separators, as Keras prints parameter counts.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &[usize]| {
            let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
            format!("(None, {})", dims.join(", "))
        };
        let w0 = self.rows.iter().map(|r| r.layer.len()).max().unwrap_or(0).max("Layer (type)".len());
        let w1 = self.rows.iter().map(|r| shape(&r.output_shape).len()).max().unwrap_or(0).max("Output Shape".len());
        let w2 = self.rows.iter().map(|r| thousands(r.params).len()).max().unwrap_or(0).max("Param #".len());
        let rule = |c: char| c.to_string().repeat(w0 + w1 + w2 + 6);
        writeln!(f, "Model: \"{}\"", self.model)?;
        writeln!(f, "{}", rule('='))?;
        writeln!(f, "{:<w0$}   {:<w1$}   {:>w2$}", "Layer (type)", "Output Shape", "Param #")?;
        writeln!(f, "{}", rule('='))?;
        for row in &self.rows {
            writeln!(f, "{:<w0$}   {:<w1$}   {:>w2$}", row.layer, shape(&row.output_shape), thousands(row.params))?;
        }
        writeln!(f, "{}", rule('='))?;
        writeln!(f, "Total params: {}", thousands(self.total_params()))?;
        writeln!(f, "Trainable params: {}", thousands(self.total_params() - self.non_trainable))?;
        write!(f, "Non-trainable params: {}", thousands(self.non_trainable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_like_keras() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(896), "896");
        assert_eq!(thousands(5_130), "5,130");
        assert_eq!(thousands(4_200_842), "4,200,842");
    }
}
