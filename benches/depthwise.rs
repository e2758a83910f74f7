//! The depthwise convolution kernel (`classify::kernels::depthwise_conv`) against burn Flex's
//! own `conv2d` with `groups == channels`, forward and backward (both gradients), on the
//! depthwise layers of EfficientNet-Lite0 at 224 px. Prints milliseconds per layer; its
//! PyTorch peer is `tools/peers/torch_depthwise.py`.
//!
//!     cargo bench --bench depthwise [-- BATCH [REPEATS]]    (default batch 32, 3 repeats)

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use std::time::Instant;

/// Channels, input side, kernel and stride of Lite0's distinct depthwise layers.
const LAYERS: [(usize, usize, usize, usize); 8] = [
    (32, 112, 3, 1),
    (96, 112, 3, 2),
    (144, 56, 3, 1),
    (144, 56, 5, 2),
    (240, 28, 3, 2),
    (480, 14, 5, 1),
    (672, 14, 5, 2),
    (1152, 7, 5, 1),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let batch = args.first().and_then(|a| a.parse().ok()).unwrap_or(32);
    let repeats = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let device = Device::flex().autodiff();
    println!("depthwise layers of EfficientNet-Lite0 at 224 px, batch {batch}, best of {repeats}, ms");
    println!(
        "| channels | input | kernel/stride | burn forward | classify forward | burn backward | classify backward |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let (mut total_burn, mut total_ours) = (0.0, 0.0);
    for (channels, side, kernel, stride) in LAYERS {
        let conv = Conv2dConfig::new([channels, channels], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Same)
            .with_groups(channels)
            .with_bias(false)
            .init(&device);
        let x = Tensor::<4>::random([batch, channels, side, side], Distribution::Normal(0.0, 1.0), &device);
        let mut times = [[f64::INFINITY; 2]; 2]; // [burn, classify][forward, backward]
        for _ in 0..repeats {
            for (ours, time) in times.iter_mut().enumerate() {
                let x = x.clone().require_grad();
                let start = Instant::now();
                // Flex is eager: the output exists when the call returns.
                let y = if ours == 1 { classify::kernels::depthwise_conv(x.clone(), &conv) } else { conv.forward(x) };
                let forward = start.elapsed().as_secs_f64();
                let start = Instant::now();
                let grads = y.sum().backward();
                let backward = start.elapsed().as_secs_f64();
                drop(grads);
                time[0] = time[0].min(forward * 1e3);
                time[1] = time[1].min(backward * 1e3);
            }
        }
        total_burn += times[0][0] + times[0][1];
        total_ours += times[1][0] + times[1][1];
        println!(
            "| {channels} | {side}x{side} | {kernel}x{kernel}/{stride} | {:.1} | {:.1} | {:.1} | {:.1} |",
            times[0][0], times[1][0], times[0][1], times[1][1]
        );
    }
    println!(
        "forward + backward over the {} layers: burn {total_burn:.0} ms, classify {total_ours:.0} ms",
        LAYERS.len()
    );
}
