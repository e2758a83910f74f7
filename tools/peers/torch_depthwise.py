"""PyTorch peer of `cargo bench --bench depthwise`: `nn.Conv2d(groups=channels)` with
TensorFlow's SAME padding (odd pixel after, as `F.pad` then the convolution, which is how
the efficientnet_lite_pytorch package pads), forward and backward, on EfficientNet-Lite0's
depthwise layers at 224 px; best of REPEATS, milliseconds.

    python tools/peers/torch_depthwise.py [BATCH [REPEATS]]
"""

import sys
import time

import torch
import torch.nn.functional as F

LAYERS = [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 5, 2),
          (240, 28, 3, 2), (480, 14, 5, 1), (672, 14, 5, 2), (1152, 7, 5, 1)]


def same_pad(side, kernel, stride):
    out = -(-side // stride)
    total = max((out - 1) * stride + kernel - side, 0)
    return (total // 2, total - total // 2)


def main():
    torch.set_num_threads(2)
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"torch {torch.__version__}, batch {batch}, best of {repeats}, ms")
    total = 0.0
    for channels, side, kernel, stride in LAYERS:
        conv = torch.nn.Conv2d(channels, channels, kernel, stride, groups=channels, bias=False)
        before, after = same_pad(side, kernel, stride)
        x0 = torch.randn(batch, channels, side, side)
        fwd = bwd = float("inf")
        for _ in range(repeats):
            x = x0.clone().requires_grad_()
            t = time.perf_counter()
            y = conv(F.pad(x, (before, after, before, after)))
            fwd = min(fwd, 1e3 * (time.perf_counter() - t))
            t = time.perf_counter()
            y.sum().backward()
            bwd = min(bwd, 1e3 * (time.perf_counter() - t))
            conv.zero_grad()
        total += fwd + bwd
        print(f"| {channels} | {side}x{side} | {kernel}x{kernel}/{stride} | {fwd:.1f} | {bwd:.1f} |")
    print(f"forward + backward over the {len(LAYERS)} layers: {total:.0f} ms")


if __name__ == "__main__":
    main()
