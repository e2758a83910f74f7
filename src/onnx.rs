//! ONNX export: a trained network as an ONNX graph (opset 13) that ONNX Runtime, tract or
//! a phone runtime can run without `classify`.
//!
//! The graph is written layer by layer from the network's own weights, with a small
//! protocol-buffer writer ([`pb`]) rather than through a tracing exporter: the CPU forward
//! pass finds its max-pool windows on the host, which a trace cannot see. What it contains:
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

use burn::prelude::*;

use crate::geometry::Framing;
use crate::model::{EfficientNet, Fast, Network, ResNet, Seed};
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
    let mut g = Graph { nodes: Vec::new(), initializers: Vec::new(), count: 0, precision, relu6_bounds: false };
    let logits = match model {
        Network::Seed(net) => seed_graph(&mut g, net),
        Network::Fast(net) => fast_graph(&mut g, net),
        Network::ResNet(net) => resnet_graph(&mut g, net),
        Network::EfficientNet(net) => efficientnet_graph(&mut g, net),
    };
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

/// `Conv -> Relu -> MaxPool -> Flatten -> Gemm -> Relu -> Gemm`; dropout is the identity
/// at inference.
fn seed_graph(g: &mut Graph, net: &Seed) -> String {
    let w = g.weight("conv.weight", net.conv.weight.val());
    let mut inputs = vec![String::from("images"), w];
    if let Some(b) = &net.conv.bias {
        inputs.push(g.weight("conv.bias", b.val()));
    }
    let x = g.conv(&inputs, 3, [1, 1, 1, 1]);
    let x = g.node("Relu", &[&x], Vec::new());
    let x = g.max_pool(&x);
    let x = g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    let x = g.dense(&x, "hidden", &net.hidden);
    let x = g.node("Relu", &[&x], Vec::new());
    g.dense(&x, "output", &net.output)
}

/// Whitening conv, three conv/pool/BN/ReLU blocks, global max-pool, dense, scale.
fn fast_graph(g: &mut Graph, net: &Fast) -> String {
    // The fixed whitening filters stay fp32 (see crate::quantize).
    let w = g.float("whiten.weight", net.whiten.weight.val());
    let mut inputs = vec![String::from("images"), w];
    if let Some(b) = &net.whiten.bias {
        inputs.push(g.float("whiten.bias", b.val()));
    }
    let pad = i64::from(net.padded_whitening);
    let mut x = g.conv(&inputs, 2, [0, 0, pad, pad]);
    x = g.node("Relu", &[&x], Vec::new());
    for (i, block) in net.blocks.iter().enumerate() {
        let prefix = format!("blocks.{i}");
        let w = g.weight(&format!("{prefix}.conv1.weight"), block.conv1.weight.val());
        x = g.conv(&[x, w], 3, [1, 1, 1, 1]);
        x = g.max_pool(&x);
        x = g.batch_norm(&x, &format!("{prefix}.norm1"), &block.norm1);
        x = g.node("Relu", &[&x], Vec::new());
        let w = g.weight(&format!("{prefix}.conv2.weight"), block.conv2.weight.val());
        x = g.conv(&[x, w], 3, [1, 1, 1, 1]);
        x = g.batch_norm(&x, &format!("{prefix}.norm2"), &block.norm2);
        x = g.node("Relu", &[&x], Vec::new());
    }
    x = g.node("GlobalMaxPool", &[&x], Vec::new());
    x = g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    let w = g.weight("head.weight", net.head.weight.val());
    x = g.node("MatMul", &[&x, &w], Vec::new());
    let scale = g.float(
        "logit_scale",
        Tensor::<1>::from_floats([crate::model::FAST_LOGIT_SCALE as f32], &net.head.weight.device()),
    );
    g.node("Mul", &[&x, &scale], Vec::new())
}

/// Input normalisation, the stem, the inverted-residual blocks (expand, depthwise, project;
/// a shortcut where shapes allow), the head convolution, global average pool, fc.
fn efficientnet_graph(g: &mut Graph, net: &EfficientNet) -> String {
    let mean = g.float("input_mean", net.input_mean.val().reshape([1, 3, 1, 1]));
    let std = g.float("input_std", net.input_std.val().reshape([1, 3, 1, 1]));
    let x = g.node("Sub", &["images", &mean], Vec::new());
    let x = g.node("Div", &[&x, &std], Vec::new());
    let x = g.conv_same_bn(&x, "conv_stem", &net.conv_stem, "bn0", &net.bn0);
    let mut x = g.relu6(&x);
    for (i, block) in net.blocks.iter().enumerate() {
        let p = format!("blocks.{i}");
        let mut y = x.clone();
        if let (Some(conv), Some(norm)) = (&block.expand_conv, &block.bn0) {
            y = g.conv_same_bn(&y, &format!("{p}.expand_conv"), conv, &format!("{p}.bn0"), norm);
            y = g.relu6(&y);
        }
        y = g.conv_same_bn(&y, &format!("{p}.depthwise_conv"), &block.depthwise_conv, &format!("{p}.bn1"), &block.bn1);
        y = g.relu6(&y);
        y = g.conv_same_bn(&y, &format!("{p}.project_conv"), &block.project_conv, &format!("{p}.bn2"), &block.bn2);
        x = if block.residual { g.node("Add", &[&y, &x], Vec::new()) } else { y };
    }
    let x = g.conv_same_bn(&x, "conv_head", &net.conv_head, "bn1", &net.bn1);
    let x = g.relu6(&x);
    let x = g.node("GlobalAveragePool", &[&x], Vec::new());
    let x = g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    g.dense(&x, "fc", &net.fc)
}

fn resnet_graph(g: &mut Graph, net: &ResNet) -> String {
    let mean = g.float("input_mean", net.input_mean.val().reshape([1, 3, 1, 1]));
    let std = g.float("input_std", net.input_std.val().reshape([1, 3, 1, 1]));
    let x = g.node("Sub", &["images", &mean], Vec::new());
    let mut x = g.node("Div", &[&x, &std], Vec::new());
    x = g.conv_bn(&x, "conv1", &net.conv1, 2, "bn1", &net.bn1);
    x = g.node("Relu", &[&x], Vec::new());
    x = g.node(
        "MaxPool",
        &[&x],
        vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("strides", &[2, 2]), attr_ints("pads", &[1, 1, 1, 1])],
    );
    for (stage, layer) in [&net.layer1, &net.layer2, &net.layer3, &net.layer4].into_iter().enumerate() {
        for (i, block) in layer.iter().enumerate() {
            let p = format!("layer{}.{i}", stage + 1);
            let shortcut = match &block.downsample {
                Some(d) => g.conv_bn(
                    &x,
                    &format!("{p}.downsample.conv"),
                    &d.conv,
                    block.stride,
                    &format!("{p}.downsample.bn"),
                    &d.bn,
                ),
                None => x.clone(),
            };
            let mut y = x;
            match (&block.conv3, &block.bn3) {
                (Some(conv3), Some(bn3)) => {
                    y = g.conv_bn(&y, &format!("{p}.conv1"), &block.conv1, 1, &format!("{p}.bn1"), &block.bn1);
                    y = g.node("Relu", &[&y], Vec::new());
                    y = g.conv_bn(
                        &y,
                        &format!("{p}.conv2"),
                        &block.conv2,
                        block.stride,
                        &format!("{p}.bn2"),
                        &block.bn2,
                    );
                    y = g.node("Relu", &[&y], Vec::new());
                    y = g.conv_bn(&y, &format!("{p}.conv3"), conv3, 1, &format!("{p}.bn3"), bn3);
                }
                _ => {
                    y = g.conv_bn(
                        &y,
                        &format!("{p}.conv1"),
                        &block.conv1,
                        block.stride,
                        &format!("{p}.bn1"),
                        &block.bn1,
                    );
                    y = g.node("Relu", &[&y], Vec::new());
                    y = g.conv_bn(&y, &format!("{p}.conv2"), &block.conv2, 1, &format!("{p}.bn2"), &block.bn2);
                }
            }
            let sum = g.node("Add", &[&y, &shortcut], Vec::new());
            x = g.node("Relu", &[&sum], Vec::new());
        }
    }
    x = g.node("GlobalAveragePool", &[&x], Vec::new());
    x = g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    g.dense(&x, "fc", &net.fc)
}

/// The graph being built: nodes in execution order and the weights they read.
struct Graph {
    nodes: Vec<pb::Msg>,
    initializers: Vec<pb::Msg>,
    count: usize,
    precision: Quantize,
    /// Whether the bounds of [`Graph::relu6`]'s `Clip` are among the initializers yet.
    relu6_bounds: bool,
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

    fn conv(&mut self, inputs: &[String], kernel: i64, pads: [i64; 4]) -> String {
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let attrs =
            vec![attr_ints("kernel_shape", &[kernel, kernel]), attr_ints("pads", &pads), attr_ints("strides", &[1, 1])];
        self.node("Conv", &inputs, attrs)
    }

    /// A bias-free convolution of `stride` with "same" padding (half the kernel), then a
    /// BatchNorm.
    fn conv_bn(
        &mut self,
        x: &str,
        conv_name: &str,
        conv: &burn::nn::conv::Conv2d,
        stride: usize,
        norm_name: &str,
        norm: &burn::nn::BatchNorm,
    ) -> String {
        let w = self.weight(&format!("{conv_name}.weight"), conv.weight.val());
        let k = conv.weight.dims()[2] as i64;
        let p = k / 2;
        let s = stride as i64;
        let attrs =
            vec![attr_ints("kernel_shape", &[k, k]), attr_ints("pads", &[p, p, p, p]), attr_ints("strides", &[s, s])];
        let y = self.node("Conv", &[x, &w], attrs);
        self.batch_norm(&y, norm_name, norm)
    }

    /// A bias-free convolution with TensorFlow's `SAME` padding (ONNX's `SAME_UPPER`: the
    /// extra pixel after), its own stride and groups, then a BatchNorm.
    fn conv_same_bn(
        &mut self,
        x: &str,
        conv_name: &str,
        conv: &burn::nn::conv::Conv2d,
        norm_name: &str,
        norm: &burn::nn::BatchNorm,
    ) -> String {
        let w = self.weight(&format!("{conv_name}.weight"), conv.weight.val());
        let k = conv.weight.dims()[2] as i64;
        let s = conv.stride[0] as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_string("auto_pad", "SAME_UPPER"),
            attr_ints("strides", &[s, s]),
            attr_int("group", conv.groups as i64),
        ];
        let y = self.node("Conv", &[x, &w], attrs);
        self.batch_norm(&y, norm_name, norm)
    }

    /// `min(max(x, 0), 6)`; the bounds are initializers, written once.
    fn relu6(&mut self, x: &str) -> String {
        if !self.relu6_bounds {
            self.initializers.push(tensor_proto("relu6.min", &[], FLOAT, 0f32.to_le_bytes().to_vec()));
            self.initializers.push(tensor_proto("relu6.max", &[], FLOAT, 6f32.to_le_bytes().to_vec()));
            self.relu6_bounds = true;
        }
        self.node("Clip", &[x, "relu6.min", "relu6.max"], Vec::new())
    }

    fn max_pool(&mut self, x: &str) -> String {
        self.node("MaxPool", &[x], vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])])
    }

    fn dense(&mut self, x: &str, name: &str, layer: &burn::nn::Linear) -> String {
        let w = self.weight(&format!("{name}.weight"), layer.weight.val());
        match &layer.bias {
            Some(b) => {
                let b = self.float(&format!("{name}.bias"), b.val());
                self.node("Gemm", &[x, &w, &b], Vec::new())
            }
            None => self.node("MatMul", &[x, &w], Vec::new()),
        }
    }

    fn batch_norm(&mut self, x: &str, name: &str, norm: &burn::nn::BatchNorm) -> String {
        let scale = self.float(&format!("{name}.gamma"), norm.gamma.val());
        let bias = self.float(&format!("{name}.beta"), norm.beta.val());
        let mean = self.float(&format!("{name}.running_mean"), norm.running_mean.value());
        let var = self.float(&format!("{name}.running_var"), norm.running_var.value());
        self.node(
            "BatchNormalization",
            &[x, &scale, &bias, &mean, &var],
            vec![attr_float("epsilon", norm.epsilon as f32)],
        )
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
