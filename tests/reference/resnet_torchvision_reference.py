"""Generates tests/reference/resnet_*_torchvision.{pt,json}: small torchvision ResNets and
their logits, which `classify`'s ResNet must reproduce after loading the `.pt` state dict.

The networks are torchvision's own classes (`torchvision.models.resnet.ResNet` with
`BasicBlock` for ResNet-18, `Bottleneck` for ResNet-50), built by torchvision's
`_make_layer`, only narrower (width 4 instead of 64) so the fixtures stay small. BatchNorm
statistics, scales and shifts are set to random values, so that loading them matters.

    pip install torch torchvision
    python tests/reference/resnet_torchvision_reference.py
"""

import json
import pathlib

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

HERE = pathlib.Path(__file__).parent
WIDTH = 4
CLASSES = 5
SIZE = 32


def narrow_resnet(block, layers, width):
    torch.manual_seed(0)
    net = ResNet(block, layers, num_classes=CLASSES)
    # Rebuild the stem and stages at `width` with torchvision's own builder.
    net.inplanes = width
    net.conv1 = torch.nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = torch.nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(block, width, layers[0])
    net.layer2 = net._make_layer(block, 2 * width, layers[1], stride=2)
    net.layer3 = net._make_layer(block, 4 * width, layers[2], stride=2)
    net.layer4 = net._make_layer(block, 8 * width, layers[3], stride=2)
    net.fc = torch.nn.Linear(8 * width * block.expansion, CLASSES)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.2 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)
    return net.eval()


def main():
    torch.manual_seed(2)
    images = torch.rand(2, 3, SIZE, SIZE)  # [0, 1], as classify feeds its networks
    for name, block, layers in [("resnet18", BasicBlock, [2, 2, 2, 2]), ("resnet50", Bottleneck, [3, 4, 6, 3])]:
        net = narrow_resnet(block, layers, WIDTH)
        with torch.no_grad():
            logits = net(images)
        torch.save(net.state_dict(), HERE / f"{name}_torchvision.pt")
        (HERE / f"{name}_torchvision.json").write_text(
            json.dumps(
                {
                    "model": name,
                    "width": WIDTH,
                    "classes": CLASSES,
                    "size": SIZE,
                    "torch": torch.__version__,
                    "images": [round(v, 6) for v in images.flatten().tolist()],
                    "logits": logits.flatten().tolist(),
                }
            )
        )
        print(name, sum(p.numel() for p in net.parameters()), "weights", logits[0, :3].tolist())


if __name__ == "__main__":
    main()
