//! ONNX export: a trained network as an ONNX graph (opset 13) that ONNX Runtime, tract or
//! a phone runtime can run without `classify`.
//!
//! The graph is written from the network's own description of itself: every architecture's
//! forward pass is written once against [`crate::model::Ops`], and the graph here is one
//! more implementation of those operations, which adds nodes and initializers where the
//! CPU one computes. No architecture is written twice, and nothing is traced (the CPU
//! forward pass finds its max-pool windows on the host, which a trace cannot see). The
//! protocol buffers are written by a small writer ([`pb`]). What the graph contains:
//!
//! - input `images`: float32 `[batch, 3, S, S]` at the run's `--image-size` S, RGB planes,
//!   pixel values / 255 (the model's own input contract, also stated in the metadata under
//!   `classify.input`, with `classify.image_size` and `classify.resize`);
//! - outputs `logits` `[batch, classes]` and `probabilities` (their softmax);
//! - metadata: `classify.model`, `classify.classes` (JSON list in label order),
//!   `classify.input`, `classify.image_size`, `classify.resize`, `classify.precision`.
//!
//! With `--quantize int8` every convolution and dense weight is stored as int8 with one
//! fp32 scale and expanded by a `DequantizeLinear` node: a quarter of the size, and the same
//! numbers `classify eval --quantize int8` computes with.

use std::collections::BTreeSet;
use std::fmt::Display;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Dropout, Linear, PaddingConfig2d};
use burn::prelude::*;

use crate::geometry::Framing;
use crate::kernels::{Bounds, Int8Dense};
use crate::model::{Network, Ops, Pool};
use crate::quantize::{Quantize, quantize_tensor};

/// ONNX operator set the graph is written for.
pub const OPSET: i64 = 13;
/// ONNX IR version that goes with [`OPSET`].
const IR_VERSION: i64 = 7;
/// What the graph's input holds at `size` x `size`, stored in its metadata.
pub fn input_contract(size: usize) -> String {
    format!(
        "images: float32 [batch, 3, {size}, {size}], RGB planes (channel, row, column), pixel values divided by \
         255 (0..1); other images: resize the shorter side, then cut out the centre {size}x{size} square \
         (classify.resize says to how many pixels)"
    )
}

/// ONNX tensor element types.
const FLOAT: i64 = 1;
const INT8: i64 = 3;

/// The ONNX file of `model`, whose classes are `classes` and whose input is framed as
/// `framing` says, at `precision`.
pub fn export(model: &Network, model_name: &str, classes: &[String], framing: Framing, precision: Quantize) -> Vec<u8> {
    let size = framing.size;
    let mut g = Graph { nodes: Vec::new(), initializers: Vec::new(), count: 0, precision, constants: BTreeSet::new() };
    let logits = model.forward_with(&mut g, String::from("images"));
    g.node_named("Identity", &[&logits], "logits", Vec::new());
    g.node_named("Softmax", &["logits"], "probabilities", vec![attr_int("axis", 1)]);

    let mut graph = pb::Msg::default();
    for node in &g.nodes {
        graph.msg(1, node);
    }
    graph.string(2, model_name);
    for init in &g.initializers {
        graph.msg(5, init);
    }
    let side = Some(size as i64);
    graph.msg(11, &value_info("images", &[None, Some(3), side, side]));
    let k = Some(classes.len() as i64);
    graph.msg(12, &value_info("logits", &[None, k]));
    graph.msg(12, &value_info("probabilities", &[None, k]));

    let mut opset = pb::Msg::default();
    opset.string(1, "");
    opset.int(2, OPSET);
    let mut file = pb::Msg::default();
    file.int(1, IR_VERSION);
    file.string(2, "classify");
    file.string(3, env!("CARGO_PKG_VERSION"));
    file.msg(7, &graph);
    file.msg(8, &opset);
    let classes_json = serde_json::to_string(classes).unwrap_or_default();
    let precision_name = match precision {
        Quantize::None => "fp32",
        Quantize::Int8 => "int8 weights (per-tensor symmetric), fp32 activations",
    };
    for (key, value) in [
        ("classify.model", model_name),
        ("classify.classes", &classes_json),
        ("classify.input", &input_contract(size)),
        ("classify.image_size", &size.to_string()),
        ("classify.resize", &framing.resize.to_string()),
        ("classify.precision", precision_name),
    ] {
        let mut entry = pb::Msg::default();
        entry.string(1, key);
        entry.string(2, value);
        file.msg(14, &entry);
    }
    file.into_bytes()
}

/// The graph being built: nodes in execution order and the weights they read. It is the
/// [`Ops`] a network's description runs on to export it: each operation adds its nodes and
/// initializers and returns the name of its output.
struct Graph {
    nodes: Vec<pb::Msg>,
    initializers: Vec<pb::Msg>,
    count: usize,
    precision: Quantize,
    /// The constants written once and shared ([`Graph::constant`]).
    constants: BTreeSet<String>,
}

impl Graph {
    /// Adds a node with a generated output name, which it returns.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<pb::Msg>) -> String {
        self.count += 1;
        let out = format!("{}_{}", op.to_lowercase(), self.count);
        self.node_named(op, inputs, &out, attrs);
        out
    }

    fn node_named(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<pb::Msg>) {
        let mut node = pb::Msg::default();
        for input in inputs {
            node.string(1, input);
        }
        node.string(2, out);
        node.string(3, out);
        node.string(4, op);
        for a in &attrs {
            node.msg(5, a);
        }
        self.nodes.push(node);
    }

    /// An fp32 scalar initializer named `name`, written the first time it is asked for.
    fn constant(&mut self, name: String, value: f32) -> String {
        if self.constants.insert(name.clone()) {
            self.initializers.push(tensor_proto(&name, &[], FLOAT, value.to_le_bytes().to_vec()));
        }
        name
    }

    /// `x` clamped to `bounds`: nothing, a `Relu`, or a `Clip` between shared constants.
    fn clamp(&mut self, bounds: Bounds, x: String) -> String {
        match bounds {
            Bounds::NONE => x,
            Bounds::RELU => self.node("Relu", &[&x], Vec::new()),
            Bounds { floor, cap } => {
                let min = self.constant(format!("clip.min.{floor}"), floor);
                let max = self.constant(format!("clip.max.{cap}"), cap);
                self.node("Clip", &[&x, &min, &max], Vec::new())
            }
        }
    }

    /// A `Conv` node on `x` with `weight` (and `bias`), kernel `kernel`, the stride,
    /// dilation and groups given, padded as `padding` says.
    fn conv_node(
        &mut self,
        x: &str,
        weight: &str,
        bias: Option<&str>,
        conv: &Conv2d,
        padding: &PaddingConfig2d,
    ) -> String {
        let [kh, kw] = conv.kernel_size.map(|k| k as i64);
        let [sh, sw] = conv.stride.map(|s| s as i64);
        let [dh, dw] = conv.dilation.map(|d| d as i64);
        let mut attrs = vec![
            attr_ints("kernel_shape", &[kh, kw]),
            attr_ints("strides", &[sh, sw]),
            attr_ints("dilations", &[dh, dw]),
            attr_int("group", conv.groups as i64),
        ];
        attrs.push(padding_attr(padding, conv.kernel_size, conv.stride, conv.dilation));
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        self.node("Conv", &inputs, attrs)
    }

    fn max_pool_node(&mut self, pool: &MaxPool2d, x: &str) -> String {
        let [kh, kw] = pool.kernel_size.map(|k| k as i64);
        let [sh, sw] = pool.stride.map(|s| s as i64);
        let [dh, dw] = pool.dilation.map(|d| d as i64);
        let attrs = vec![
            attr_ints("kernel_shape", &[kh, kw]),
            attr_ints("strides", &[sh, sw]),
            attr_ints("dilations", &[dh, dw]),
            attr_int("ceil_mode", i64::from(pool.ceil_mode)),
            padding_attr(&pool.padding, pool.kernel_size, pool.stride, pool.dilation),
        ];
        self.node("MaxPool", &[x], attrs)
    }

    /// A trained weight: fp32, or int8 behind a `DequantizeLinear` node when exporting int8
    /// and the weight has two or more dimensions.
    fn weight<const D: usize>(&mut self, name: &str, tensor: Tensor<D>) -> String {
        if self.precision == Quantize::None || D < 2 {
            return self.float(name, tensor);
        }
        let dims: Vec<i64> = tensor.dims().iter().map(|&d| d as i64).collect();
        let values = quantize_tensor(tensor).dequantize().into_data().try_to_vec::<f32>().unwrap_or_default();
        // burn's symmetric int8 maps the largest magnitude to 127, so the scale and the
        // integers are recovered exactly from the dequantized values.
        let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let ints: Vec<u8> = values.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8).collect();
        let q = format!("{name}.int8");
        self.initializers.push(tensor_proto(&q, &dims, INT8, ints));
        let s = format!("{name}.scale");
        self.initializers.push(tensor_proto(&s, &[], FLOAT, scale.to_le_bytes().to_vec()));
        let z = format!("{name}.zero_point");
        self.initializers.push(tensor_proto(&z, &[], INT8, vec![0]));
        self.node_named("DequantizeLinear", &[&q, &s, &z], name, Vec::new());
        name.to_string()
    }

    /// An fp32 initializer.
    fn float<const D: usize>(&mut self, name: &str, tensor: Tensor<D>) -> String {
        let dims: Vec<i64> = tensor.dims().iter().map(|&d| d as i64).collect();
        let values = tensor.into_data().try_to_vec::<f32>().unwrap_or_default();
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(tensor_proto(name, &dims, FLOAT, bytes));
        name.to_string()
    }
}

impl Ops for Graph {
    type Maps = String;
    type Rows = String;

    fn normalize(&mut self, mean: &Param<Tensor<1>>, std: &Param<Tensor<1>>, x: String) -> String {
        let mean = self.float("input_mean", mean.val().reshape([1, 3, 1, 1]));
        let std = self.float("input_std", std.val().reshape([1, 3, 1, 1]));
        let x = self.node("Sub", &[&x, &mean], Vec::new());
        self.node("Div", &[&x, &std], Vec::new())
    }

    fn conv(&mut self, path: impl Display, conv: &Conv2d, x: String) -> String {
        let weight = self.weight(&format!("{path}.weight"), conv.weight.val());
        let bias = conv.bias.as_ref().map(|b| self.float(&format!("{path}.bias"), b.val()));
        self.conv_node(&x, &weight, bias.as_deref(), conv, &conv.padding)
    }

    fn conv_of_constant(&mut self, path: impl Display, conv: &Conv2d, x: String) -> String {
        self.conv(path, conv, x)
    }

    fn fixed_conv(&mut self, path: impl Display, conv: &Conv2d, pads: [usize; 4], x: String) -> String {
        // Fixed filters stay fp32 (see crate::quantize).
        let weight = self.float(&format!("{path}.weight"), conv.weight.val());
        let bias = conv.bias.as_ref().map(|b| self.float(&format!("{path}.bias"), b.val()));
        let [top, left, bottom, right] = pads;
        self.conv_node(&x, &weight, bias.as_deref(), conv, &PaddingConfig2d::Explicit(top, left, bottom, right))
    }

    fn conv_relu_pool(&mut self, path: impl Display, conv: &Conv2d, pool: &MaxPool2d, x: String) -> String {
        let x = self.conv(path, conv, x);
        let x = self.node("Relu", &[&x], Vec::new());
        self.max_pool_node(pool, &x)
    }

    fn batch_norm(&mut self, path: impl Display, norm: &BatchNorm, bounds: Bounds, x: String) -> String {
        let scale = self.float(&format!("{path}.gamma"), norm.gamma.val());
        let bias = self.float(&format!("{path}.beta"), norm.beta.val());
        let mean = self.float(&format!("{path}.running_mean"), norm.running_mean.value());
        let var = self.float(&format!("{path}.running_var"), norm.running_var.value());
        let attrs = vec![attr_float("epsilon", norm.epsilon as f32)];
        let y = self.node("BatchNormalization", &[&x, &scale, &bias, &mean, &var], attrs);
        self.clamp(bounds, y)
    }

    fn max_pool(&mut self, pool: &MaxPool2d, x: String) -> String {
        self.max_pool_node(pool, &x)
    }

    fn relu(&mut self, x: String) -> String {
        self.node("Relu", &[&x], Vec::new())
    }

    fn add(&mut self, x: String, y: String) -> String {
        self.node("Add", &[&x, &y], Vec::new())
    }

    fn global_pool(&mut self, pool: Pool, x: String) -> String {
        let op = match pool {
            Pool::Max => "GlobalMaxPool",
            Pool::Average => "GlobalAveragePool",
        };
        let x = self.node(op, &[&x], Vec::new());
        self.flatten(x)
    }

    fn flatten(&mut self, x: String) -> String {
        self.node("Flatten", &[&x], vec![attr_int("axis", 1)])
    }

    /// The weight is int8 in an int8 export whether or not the network has `int8`.
    fn dense(&mut self, path: impl Display, layer: &Linear, _: Option<&Int8Dense>, x: String) -> String {
        let w = self.weight(&format!("{path}.weight"), layer.weight.val());
        match &layer.bias {
            Some(b) => {
                let b = self.float(&format!("{path}.bias"), b.val());
                self.node("Gemm", &[&x, &w, &b], Vec::new())
            }
            None => self.node("MatMul", &[&x, &w], Vec::new()),
        }
    }

    fn relu_rows(&mut self, x: String) -> String {
        self.node("Relu", &[&x], Vec::new())
    }

    /// The identity: a graph is for inference.
    fn dropout(&mut self, _: &Dropout, x: String) -> String {
        x
    }

    fn scale(&mut self, path: impl Display, factor: f32, x: String) -> String {
        let name = path.to_string();
        self.initializers.push(tensor_proto(&name, &[1], FLOAT, factor.to_le_bytes().to_vec()));
        self.node("Mul", &[&x, &name], Vec::new())
    }
}

/// The `pads` (top, left, bottom, right) of `padding`, or `auto_pad SAME_UPPER` for a
/// "same" padding that is not symmetric (TensorFlow's and burn's: the extra pixel after).
fn padding_attr(padding: &PaddingConfig2d, kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> pb::Msg {
    let pads = match *padding {
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Same => {
            let span = [0, 1].map(|i| dilation[i] * (kernel[i] - 1));
            if stride != [1, 1] || span.iter().any(|s| s % 2 == 1) {
                return attr_string("auto_pad", "SAME_UPPER");
            }
            [span[0] / 2, span[1] / 2, span[0] / 2, span[1] / 2]
        }
    };
    attr_ints("pads", &pads.map(|p| p as i64))
}

fn tensor_proto(name: &str, dims: &[i64], data_type: i64, raw: Vec<u8>) -> pb::Msg {
    let mut t = pb::Msg::default();
    for &d in dims {
        t.int(1, d);
    }
    t.int(2, data_type);
    t.string(8, name);
    t.bytes(9, &raw);
    t
}

/// A float tensor input or output; `None` dimensions are named `batch`.
fn value_info(name: &str, dims: &[Option<i64>]) -> pb::Msg {
    let mut shape = pb::Msg::default();
    for d in dims {
        let mut dim = pb::Msg::default();
        match d {
            Some(v) => dim.int(1, *v),
            None => dim.string(2, "batch"),
        }
        shape.msg(1, &dim);
    }
    let mut tensor = pb::Msg::default();
    tensor.int(1, FLOAT);
    tensor.msg(2, &shape);
    let mut ty = pb::Msg::default();
    ty.msg(1, &tensor);
    let mut info = pb::Msg::default();
    info.string(1, name);
    info.msg(2, &ty);
    info
}

/// ONNX attribute types.
const ATTR_FLOAT: i64 = 1;
const ATTR_INT: i64 = 2;
const ATTR_STRING: i64 = 3;
const ATTR_INTS: i64 = 7;

fn attr_int(name: &str, v: i64) -> pb::Msg {
    let mut a = pb::Msg::default();
    a.string(1, name);
    a.int(3, v);
    a.int(20, ATTR_INT);
    a
}

fn attr_ints(name: &str, vs: &[i64]) -> pb::Msg {
    let mut a = pb::Msg::default();
    a.string(1, name);
    for &v in vs {
        a.int(8, v);
    }
    a.int(20, ATTR_INTS);
    a
}

fn attr_string(name: &str, v: &str) -> pb::Msg {
    let mut a = pb::Msg::default();
    a.string(1, name);
    a.bytes(4, v.as_bytes());
    a.int(20, ATTR_STRING);
    a
}

fn attr_float(name: &str, v: f32) -> pb::Msg {
    let mut a = pb::Msg::default();
    a.string(1, name);
    a.float(2, v);
    a.int(20, ATTR_FLOAT);
    a
}

/// The protocol-buffer wire format, as much of it as ONNX files need.
mod pb {
    /// An encoded message under construction.
    #[derive(Default)]
    pub struct Msg(Vec<u8>);

    impl Msg {
        fn varint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.0.push((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
        }

        fn key(&mut self, field: u32, wire_type: u8) {
            self.varint((u64::from(field) << 3) | u64::from(wire_type));
        }

        /// An integer field (int32, int64 and enums share the varint encoding; negative
        /// values take ten bytes, as the format says).
        pub fn int(&mut self, field: u32, v: i64) {
            self.key(field, 0);
            self.varint(v as u64);
        }

        pub fn float(&mut self, field: u32, v: f32) {
            self.key(field, 5);
            self.0.extend_from_slice(&v.to_le_bytes());
        }

        pub fn bytes(&mut self, field: u32, v: &[u8]) {
            self.key(field, 2);
            self.varint(v.len() as u64);
            self.0.extend_from_slice(v);
        }

        pub fn string(&mut self, field: u32, v: &str) {
            self.bytes(field, v.as_bytes());
        }

        pub fn msg(&mut self, field: u32, m: &Msg) {
            self.bytes(field, &m.0);
        }

        pub fn into_bytes(self) -> Vec<u8> {
            self.0
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn encodes_the_protobuf_documentations_examples() {
            // From protobuf.dev/programming-guides/encoding: field 1 = 150 is 08 96 01;
            // field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
            let mut m = Msg::default();
            m.int(1, 150);
            assert_eq!(m.into_bytes(), [0x08, 0x96, 0x01]);
            let mut m = Msg::default();
            m.string(2, "testing");
            assert_eq!(m.into_bytes(), [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
            // -1 as int64: ten bytes, all ones.
            let mut m = Msg::default();
            m.int(1, -1);
            assert_eq!(m.into_bytes(), [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
            let mut m = Msg::default();
            m.float(2, 1.0);
            assert_eq!(m.into_bytes(), [0x15, 0x00, 0x00, 0x80, 0x3f]);
        }
    }
}
