//! A dense layer (`x @ weight + bias`) as a burn backend extension, so that its three
//! matrix products on the CPU are each laid out the way the `gemm` crate runs fastest.
//!
//! For the seed model's 8192 -> 512 layer at batch 32, the products are 268 MFLOP each and
//! make up most of a training step. burn's `Linear` adds the bias as a separate pass, and
//! its autodiff takes the input gradient as `dy @ weight^T` with the transpose as a strided
//! view, which `gemm` multiplies at about half the rate of the same product with contiguous
//! operands (2.2 against 1.4 ms here). So:
//!
//! - forward: `y = x @ weight`, accumulated onto rows that already hold the bias;
//! - input gradient: `dx^T = weight @ dy^T` with `dy^T` made contiguous (a few kilobytes),
//!   then transposed into place (one pass over `dx`);
//! - weight gradient: `dW = x^T @ dy`; bias gradient: the column sums of `dy`.
//!
//! The extension is routed for Flex and autodiff over Flex only; [`dense`] uses it there
//! and burn's `Linear` on every other device and for int8 weights.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::conv_op::flex_tensor;

/// The extension: the layer and its three gradients.
#[backend_extension(Flex, Autodiff)]
pub trait DenseBackend: Backend {
    /// # Shapes
    /// - x: `[batch, inputs]`, weight: `[inputs, outputs]`, bias: `[outputs]`
    /// - output: `[batch, outputs]`
    fn dense(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradients with respect to x, the weight and the bias, given the gradient with
    /// respect to the output (`[batch, outputs]`).
    fn dense_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

fn f32_values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 (checked by `dense_on`)")
}

impl DenseBackend for Flex {
    fn dense(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let [batch, inputs] = x.layout().shape().dims();
        let outputs = weight.layout().shape().dims::<2>()[1];
        let [x, weight, bias] = [x, weight, bias].map(|t| t.to_contiguous());
        let y = forward(f32_values(&x), f32_values(&weight), f32_values(&bias), [batch, inputs, outputs]);
        flex_tensor(y, [batch, outputs])
    }

    fn dense_backward(x: FlexTensor, weight: FlexTensor, output_grad: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
        let [batch, inputs] = x.layout().shape().dims();
        let outputs = weight.layout().shape().dims::<2>()[1];
        let [x, weight, output_grad] = [x, weight, output_grad].map(|t| t.to_contiguous());
        let (dx, dw, db) =
            gradients(f32_values(&x), f32_values(&weight), f32_values(&output_grad), [batch, inputs, outputs]);
        (flex_tensor(dx, [batch, inputs]), flex_tensor(dw, [inputs, outputs]), flex_tensor(db, [outputs]))
    }
}

#[derive(Debug)]
struct DenseBackward;

impl<B: Backend + DenseBackend> Backward<B, 3> for DenseBackward {
    /// The checkpointed input and weight.
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        let (dx, dw, db) = B::dense_backward(x, weight, grad);
        for (node, grad) in [(node_x, dx), (node_weight, dw), (node_bias, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + DenseBackend, C: CheckpointStrategy> DenseBackend for Autodiff<B, C> {
    fn dense(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        match DenseBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
                prep.finish(state, B::dense(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::dense(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
            }
        }
    }

    fn dense_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("the gradients are only taken on the inner backend, inside the backward pass")
    }
}

/// `linear.forward(x)`: on the CPU with f32 weights and a bias through the extension above,
/// elsewhere through burn's `Linear`.
///
/// # Shapes
/// - x: `[batch, inputs]`
/// - output: `[batch, outputs]`
pub fn dense(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    let f32_param = |t: Tensor<2>| t.dtype() == DType::F32;
    let bias = match &linear.bias {
        Some(bias) if bias.val().dtype() == DType::F32 => bias.val(),
        _ => return linear.forward(x),
    };
    if !crate::device::is_cpu(&x.device()) || x.dtype() != DType::F32 || !f32_param(linear.weight.val()) {
        return linear.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as DenseBackend>::dense(
        x.into_dispatch(),
        linear.weight.val().into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// `dst = dst + lhs @ rhs` (or `lhs @ rhs` when `accumulate` is false, `dst` then only
/// written) over row-major buffers, with the `gemm` crate on all of rayon's threads.
///
/// # Shapes
/// - lhs: `[m, k]`, rhs: `[k, n]`, dst: `[m, n]`; a transposed operand is passed with
///   `transposed` set and stored as `[k, m]` or `[n, k]`.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` floats (and reads, with `accumulate`), and
/// must not overlap the operands.
unsafe fn gemm_into(dst: *mut f32, accumulate: bool, lhs: (&[f32], bool), rhs: (&[f32], bool), [m, k, n]: [usize; 3]) {
    assert!(lhs.0.len() == m * k && rhs.0.len() == k * n, "operands do not match");
    // (column stride, row stride) of each operand as gemm reads it.
    let strides = |transposed: bool, rows: usize, columns: usize| {
        if transposed { (rows as isize, 1) } else { (1, columns as isize) }
    };
    let (lhs_cs, lhs_rs) = strides(lhs.1, m, k);
    let (rhs_cs, rhs_rs) = strides(rhs.1, k, n);
    // SAFETY: the strides describe the operands of the asserted lengths; the caller
    // vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.0.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// `lhs @ rhs` into a new buffer that the product writes whole, with no zeroing pass
/// first: for the seed's 8192 x 512 weight gradient that pass cost a fifth of the product.
/// Arguments as [`gemm_into`].
fn product(lhs: (&[f32], bool), rhs: (&[f32], bool), [m, k, n]: [usize; 3]) -> Vec<f32> {
    if m * n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the new buffer has room for m * n floats and is not an operand; without
    // `accumulate` gemm writes every element and reads none, so all are set before
    // `set_len` exposes them.
    unsafe {
        gemm_into(dst.as_mut_ptr(), false, lhs, rhs, [m, k, n]);
        dst.set_len(m * n);
    }
    dst
}

/// `[rows, columns]` row-major into `[columns, rows]` row-major.
fn transpose(values: &[f32], [rows, columns]: [usize; 2]) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    if values.is_empty() {
        return out;
    }
    // Each task writes whole rows of the result, reading a strided column of `values`.
    out.par_chunks_mut(rows).enumerate().for_each(|(column, out)| {
        for (row, v) in out.iter_mut().enumerate() {
            *v = values[row * columns + column];
        }
    });
    out
}

/// The layer on the host: each output row starts as the bias and the product is added.
///
/// # Shapes
/// - x: `[batch, inputs]`, weight: `[inputs, outputs]`, bias: `[outputs]`, all row-major
/// - output: `[batch, outputs]`, row-major
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], [batch, inputs, outputs]: [usize; 3]) -> Vec<f32> {
    let mut y: Vec<f32> = bias.iter().copied().cycle().take(batch * outputs).collect();
    if batch > 0 && outputs > 0 && inputs > 0 {
        // SAFETY: `y` holds batch x outputs floats and is not an operand.
        unsafe { gemm_into(y.as_mut_ptr(), true, (x, false), (weight, false), [batch, inputs, outputs]) };
    }
    y
}

/// Gradients of the layer on the host (see the module docs for the layout of each product).
///
/// # Shapes
/// - x: `[batch, inputs]`, weight: `[inputs, outputs]`, output_grad: `[batch, outputs]`
/// - output: `[batch, inputs]`, `[inputs, outputs]` and `[outputs]`, all row-major
pub fn gradients(
    x: &[f32],
    weight: &[f32],
    output_grad: &[f32],
    [batch, inputs, outputs]: [usize; 3],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut bias_grad = vec![0f32; outputs];
    for row in output_grad.chunks_exact(outputs.max(1)) {
        bias_grad.iter_mut().zip(row).for_each(|(b, g)| *b += g);
    }
    let weight_grad = product((x, true), (output_grad, false), [inputs, batch, outputs]);
    let output_grad_t = transpose(output_grad, [batch, outputs]);
    let x_grad_t = product((weight, false), (&output_grad_t, false), [inputs, outputs, batch]);
    (transpose(&x_grad_t, [inputs, batch]), weight_grad, bias_grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Same output and same input, weight and bias gradients as burn's `Linear`, at shapes
    /// where every dimension differs (so a swapped stride or transpose shows).
    #[test]
    fn matches_burns_linear_forward_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(7);
        let linear = LinearConfig::new(37, 11).init(&device);
        let linear = Linear {
            bias: Some(burn::module::Param::from_tensor(Tensor::random([11], Distribution::Default, &device))),
            ..linear
        };
        let x = Tensor::<2>::random([5, 37], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let ours = dense(&linear, x.clone());
        let burns = linear.forward(x.clone());
        assert_eq!(ours.dims(), [5, 11]);
        assert!(max_abs_diff(ours.clone(), burns.clone()) < 1e-5);

        let probe = Tensor::<2>::random([5, 11], Distribution::Normal(0.0, 1.0), &device);
        let g_ours = (ours * probe.clone()).sum().backward();
        let g_burn = (burns * probe).sum().backward();
        assert!(max_abs_diff(x.grad(&g_ours).unwrap(), x.grad(&g_burn).unwrap()) < 1e-5);
        let w = &linear.weight;
        assert!(max_abs_diff(w.grad(&g_ours).unwrap(), w.grad(&g_burn).unwrap()) < 1e-5);
        let b = linear.bias.as_ref().unwrap();
        assert!(max_abs_diff(b.grad(&g_ours).unwrap(), b.grad(&g_burn).unwrap()) < 1e-5);
    }

    #[test]
    fn transposes() {
        let values: Vec<f32> = (0..6).map(|i| i as f32).collect();
        assert_eq!(transpose(&values, [2, 3]), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
