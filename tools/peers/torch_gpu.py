#!/usr/bin/env python3
"""PyTorch peer of `classify bench --device wgpu|cuda` on a GPU, for BENCHMARKS.md: training
steps (forward, backward, optimiser) and batch inference, timed with CUDA synchronisation,
in images/s, and the peak GPU memory PyTorch allocated.

  airbench   airbench94's network (Keller Jordan's `airbench` 0.1.8, `make_net94`), at the
             `fast` model's widths 64/128/256 with ReLU and as published (64/256/256, GELU),
             in fp32 and in the fp16 airbench itself trains in
  resnet18   torchvision's ResNet-18 at 224 px, fp32 and bf16 autocast
  record     airbench94's own 9.9-epoch recipe (`train94`) on the CIFAR-10 folder given,
             split like classify's seeded split is not (airbench's loader wants its own
             train.pt/test.pt): the first VAL images of a seeded shuffle are the test set

Prints one JSON line per measurement.
  python3 tools/peers/torch_gpu.py airbench --batch-size 1024
  python3 tools/peers/torch_gpu.py resnet18 --batch-size 128
  python3 tools/peers/torch_gpu.py record --data .gpu/cifar --val 1000
"""
import argparse, json, pathlib, random, sys, time

import torch
from torch import nn
import torch.nn.functional as F


def timed(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(name, net, size, batch, steps, warmup, dtype, autocast, classes=10):
    """Images/s of training steps and of inference for `net` at `size` px, batch `batch`."""
    device = torch.device("cuda")
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(batch, 3, size, size, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)

    def context():
        return torch.autocast("cuda", dtype=autocast) if autocast else torch.autocast("cuda", enabled=False)

    def step():
        with context():
            loss = F.cross_entropy(net(x).float(), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    torch.cuda.reset_peak_memory_stats()
    net.train()
    train_s = timed(step, steps, warmup)
    net.eval()

    def infer():
        with torch.no_grad(), context():
            net(x)

    infer_s = timed(infer, steps, warmup)
    precision = f"{autocast} autocast".replace("torch.", "") if autocast else str(dtype).replace("torch.", "")
    print(json.dumps({
        "framework": f"torch {torch.__version__}", "gpu": torch.cuda.get_device_name(), "net": name,
        "precision": precision, "image_size": size, "batch_size": batch, "steps": steps,
        "train_images_per_s": round(batch / train_s, 1), "infer_images_per_s": round(batch / infer_s, 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
    }), flush=True)


def airbench_net(widths, act, half):
    from airbench import lib_airbench94 as ab
    net = ab.make_net94(widths=dict(zip(("block1", "block2", "block3"), widths)))  # fp16, on the GPU
    if act == "relu":
        for module in list(net.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.GELU):
                    setattr(module, child_name, nn.ReLU())
    return net if half else net.float()


def load_folder(root, val, seed=0):
    """The class folders under `root` as uint8 NHWC tensors, split into (train, test) with the
    first `val` images of a seeded shuffle as the test set."""
    import numpy as np
    from PIL import Image
    classes = sorted(p.name for p in pathlib.Path(root).iterdir() if p.is_dir())
    items = [(f, c) for c, name in enumerate(classes) for f in sorted((pathlib.Path(root) / name).iterdir())]
    random.Random(seed).shuffle(items)
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((32, 32))) for f, _ in items])
    labels = torch.tensor([c for _, c in items])
    images = torch.from_numpy(images)
    part = lambda a, b: {"images": images[a:b], "labels": labels[a:b], "classes": classes}
    return part(val, len(items)), part(0, val)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["airbench", "resnet18", "record"])
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--data", help="record: a folder of class folders of 32x32 images")
    ap.add_argument("--val", type=int, default=1000, help="record: images held out for the test set")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    if args.what == "airbench":
        for widths, act in [((64, 128, 256), "relu"), ((64, 256, 256), "gelu")]:
            label = f"airbench94 make_net94 widths {list(widths)} {act}"
            measure(label, airbench_net(widths, act, half=False), 32, args.batch_size, args.steps, args.warmup,
                    torch.float32, None)
            measure(label, airbench_net(widths, act, half=True), 32, args.batch_size, args.steps, args.warmup,
                    torch.float16, None)
    elif args.what == "resnet18":
        import torchvision
        for autocast in [None, torch.bfloat16]:
            net = torchvision.models.resnet18(num_classes=10).cuda().to(memory_format=torch.channels_last)
            measure("torchvision resnet18", net, 224, args.batch_size, args.steps, args.warmup, torch.float32,
                    autocast)
    else:
        from airbench import lib_airbench94 as ab
        import airbench.utils as utils
        work = pathlib.Path("/tmp/airbench-data/cifar10")
        work.mkdir(parents=True, exist_ok=True)
        train, test = load_folder(args.data, args.val)
        torch.save(train, work / "train.pt")
        torch.save(test, work / "test.pt")
        loader = utils.CifarLoader(str(work), train=True, batch_size=ab.hyp["opt"]["batch_size"],
                                   aug=ab.hyp["aug"], altflip=True)
        # train94 evaluates on CifarLoader('cifar10', train=False): a folder relative to here.
        import os
        os.chdir(work.parent)
        ab.train94(loader, run="warmup", verbose=True)  # returns after its first step: compiles
        torch.cuda.synchronize()
        start = time.perf_counter()
        model = ab.train94(loader, verbose=True)  # prints its table, with its own training time
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        test_loader = utils.CifarLoader(str(work), train=False, batch_size=2000)
        accuracy = utils.evaluate(model, test_loader, tta_level=ab.hyp["net"]["tta_level"])
        print(json.dumps({
            "framework": f"torch {torch.__version__}", "gpu": torch.cuda.get_device_name(),
            "net": "airbench94 train94 (9.9 epochs, batch 1024, fp16, TTA)", "train_images": len(train["labels"]),
            "test_images": len(test["labels"]), "wall_s_with_per_epoch_evals": round(wall, 2),
            "test_accuracy": round(accuracy, 4),
        }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
