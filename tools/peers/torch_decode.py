"""PyTorch peer of classify's photo loading: images/s decoded, resized and augmented by a
torch DataLoader with torchvision transforms over an image folder, for comparison with the
`loaded ... in S s` line of `classify train` (which decodes every image once, resizing the
shorter side to 146 px and keeping the centre, then crops each epoch from memory).

    python tools/peers/torch_decode.py ../shared/datasets/hymenoptera/train --workers 2
"""

import argparse
import json
import time

import torch
import torchvision
from torchvision import transforms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    tf = transforms.Compose([
        transforms.RandomResizedCrop(args.size, scale=(0.35, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    data = torchvision.datasets.ImageFolder(args.root, transform=tf)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, num_workers=args.workers)
    rates = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        n = sum(x.shape[0] for x, _ in loader)
        rates.append(n / (time.perf_counter() - t))
    print(json.dumps({"peer": f"torchvision {torchvision.__version__}", "images": len(data),
                      "workers": args.workers, "images_per_s_per_epoch": [round(r, 1) for r in rates]}))


if __name__ == "__main__":
    main()
