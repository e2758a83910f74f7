#!/usr/bin/env python3
"""Keras reference values for the Rust (burn) test of the "seed" model's forward pass.

Model (same as ../../../shared/peers/keras_seed.py, 4,200,842 parameters), inference
mode (Dropout off):
  Input(32,32,3) -> Conv2D(32, 3x3, same, relu) -> MaxPooling2D(2x2) -> Flatten
  -> Dense(512, relu) -> Dropout(0.3) -> Dense(10, softmax)

Weights and inputs are defined by formulas over LOGICAL indices. Each value is evaluated
in float64 and then cast to float32, on both the Python and the Rust side:
  input      x[n, c, h, w] = ((n*7 + c*31 + h*5 + w*3) % 17) / 16.0   n<2, c<3, h,w<32
  conv       W[o, i, kh, kw] = sin(1 + o*0.7 + i*1.3 + kh*0.5 + kw*0.3) * 0.2
                                                               o<32, i<3, kh,kw<3
  conv bias  b[o] = 0.01*(o % 5) - 0.02
  dense1     D1[f, j] = sin(f*0.013 + j*0.17) * 0.02            f<8192, j<512
  dense1 bias c1[j] = cos(j*0.1) * 0.01
  dense2     D2[j, k] = sin(j*0.07 + k*1.1) * 0.1               j<512, k<10
  dense2 bias c2[k] = 0.01*k - 0.05

Layout mapping (burn is NCHW; Keras is NHWC):
  Keras input  X[n, h, w, c]        = x[n, c, h, w]
  Keras conv kernel K[kh, kw, i, o] = W[o, i, kh, kw]
  Flatten: burn flattens the pooled [32, 16, 16] map in (c, h, w) order, feature
  f = c*256 + h*16 + w; Keras flattens [16, 16, 32] in (h, w, c) order, row
  r = h*512 + w*32 + c. So the Keras Dense1 kernel row r(h, w, c) = D1[f(c, h, w), :].
  Keras Dense2 kernel [512, 10] = D2 as is.

Output (stdout, JSON): {"keras", "tensorflow", "logits": [[10], [10]], "probs": [[10], [10]]}
for both images; logits are the pre-softmax output of the last Dense layer (taken from a
twin model with a linear last layer and the same weights), probs the softmax model's
output; all computed by Keras in float32 and printed as repr of Python floats made from
the float32 values. As a self-check the script also runs the forward pass in plain numpy
(float64, NCHW, straight from the formulas, no layout mapping) and asserts it agrees with
Keras to 1e-5; the max difference goes to stderr.

Rerun, from the repository root:
  $(../shared/peers/setup.sh) tests/reference/seed_keras_reference.py > tests/reference/seed_keras.json
(setup.sh prints the venv's python, default ~/.cache/classify-peers/venv/bin/python.)
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU only

import numpy as np

EXPECTED_PARAMS = 4_200_842
N, C, H, W = 2, 3, 32, 32
CO, K = 32, 3
PH, PW = H // 2, W // 2
FEAT = CO * PH * PW  # 8192
HID, OUT = 512, 10


def f32(a):
    """Formula evaluated in float64, then cast to float32 (as on the Rust side)."""
    return np.asarray(a, dtype=np.float64).astype(np.float32)


def logical_tensors():
    n, c, h, w = np.meshgrid(np.arange(N), np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    x = f32(((n * 7 + c * 31 + h * 5 + w * 3) % 17) / 16.0)                       # [N, C, H, W]
    o, i, kh, kw = np.meshgrid(np.arange(CO), np.arange(C), np.arange(K), np.arange(K), indexing="ij")
    conv_w = f32(np.sin(1 + o * 0.7 + i * 1.3 + kh * 0.5 + kw * 0.3) * 0.2)      # [O, I, KH, KW]
    o = np.arange(CO)
    conv_b = f32(0.01 * (o % 5) - 0.02)                                           # [O]
    f, j = np.meshgrid(np.arange(FEAT), np.arange(HID), indexing="ij")
    d1 = f32(np.sin(f * 0.013 + j * 0.17) * 0.02)                                 # [F, J]
    c1 = f32(np.cos(np.arange(HID) * 0.1) * 0.01)                                 # [J]
    j, k = np.meshgrid(np.arange(HID), np.arange(OUT), indexing="ij")
    d2 = f32(np.sin(j * 0.07 + k * 1.1) * 0.1)                                    # [J, K]
    c2 = f32(0.01 * np.arange(OUT) - 0.05)                                        # [K]
    return x, conv_w, conv_b, d1, c1, d2, c2


def numpy_forward(x, conv_w, conv_b, d1, c1, d2, c2):
    """Plain NCHW forward pass in float64; returns (logits, probs)."""
    x, conv_w, conv_b, d1, c1, d2, c2 = (a.astype(np.float64) for a in (x, conv_w, conv_b, d1, c1, d2, c2))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))  # "same" padding for 3x3, stride 1
    y = np.zeros((N, CO, H, W))
    for kh in range(K):
        for kw in range(K):
            patch = xp[:, :, kh:kh + H, kw:kw + W]                                # [N, I, H, W]
            y += np.einsum("nihw,oi->nohw", patch, conv_w[:, :, kh, kw])
    y = np.maximum(y + conv_b[None, :, None, None], 0.0)
    p = y.reshape(N, CO, PH, 2, PW, 2).max(axis=(3, 5))                          # [N, 32, 16, 16]
    feat = p.reshape(N, FEAT)                                                     # (c, h, w) order
    hid = np.maximum(feat @ d1 + c1, 0.0)
    logits = hid @ d2 + c2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits, e / e.sum(axis=1, keepdims=True)


def build(keras, last_activation):
    from keras import layers
    return keras.Sequential([
        keras.Input(shape=(32, 32, 3)),
        layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(10, activation=last_activation),
    ])


def main():
    import keras
    import tensorflow as tf

    x, conv_w, conv_b, d1, c1, d2, c2 = logical_tensors()

    # Layout mapping to Keras.
    x_keras = np.ascontiguousarray(x.transpose(0, 2, 3, 1))                      # [N, H, W, C]
    k_conv = np.ascontiguousarray(conv_w.transpose(2, 3, 1, 0))                   # [KH, KW, I, O]
    hh, ww, cc = np.meshgrid(np.arange(PH), np.arange(PW), np.arange(CO), indexing="ij")
    f_of_r = (cc * (PH * PW) + hh * PW + ww).reshape(-1)  # row r = h*512 + w*32 + c -> f
    k_d1 = np.ascontiguousarray(d1[f_of_r])                                       # [8192, 512]
    weights = [k_conv, conv_b, k_d1, c1, d2, c2]

    probs_model = build(keras, "softmax")
    logits_model = build(keras, None)
    for m in (probs_model, logits_model):
        n_params = m.count_params()
        assert n_params == EXPECTED_PARAMS, f"parameter count {n_params} != {EXPECTED_PARAMS}"
        m.set_weights(weights)

    logits = np.asarray(logits_model(x_keras, training=False), dtype=np.float32)
    probs = np.asarray(probs_model(x_keras, training=False), dtype=np.float32)
    assert logits.shape == (N, OUT) and probs.shape == (N, OUT)

    ref_logits, ref_probs = numpy_forward(x, conv_w, conv_b, d1, c1, d2, c2)
    d_logits = float(np.max(np.abs(logits - ref_logits)))
    d_probs = float(np.max(np.abs(probs - ref_probs)))
    print(f"numpy NCHW vs keras: max |diff| logits {d_logits:.3e}, probs {d_probs:.3e}",
          file=sys.stderr)
    assert d_logits < 1e-5 and d_probs < 1e-5, "numpy reference disagrees with Keras"

    out = {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "logits": [[float(v) for v in row] for row in logits],
        "probs": [[float(v) for v in row] for row in probs],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
