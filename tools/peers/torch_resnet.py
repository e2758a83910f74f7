"""PyTorch peer of `classify bench --model resnet18 --image-size 128` (and of
`--model efficientnet-lite0 --image-size 224`): torchvision's ResNet, or the
efficientnet_lite_pytorch package's EfficientNet-Lite, on random images, timed the same way
(warm-up steps, then timed SGD-Nesterov steps with label smoothing; inference at batch 256),
on the same number of threads.

    pip install torch torchvision
    pip install --no-deps efficientnet_lite_pytorch   # for --model efficientnet-lite0
    python tools/peers/torch_resnet.py --model resnet18 --image-size 128 --batch-size 64 --threads 2
    python tools/peers/torch_resnet.py --model efficientnet-lite0 --image-size 224 --batch-size 32
"""

import argparse
import json
import time

import torch
import torchvision


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--infer-images", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model.startswith("efficientnet-lite"):
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(args.model, num_classes=10)
    else:
        net = getattr(torchvision.models, args.model)(num_classes=10)
    s, b = args.image_size, args.batch_size
    x = torch.rand(b, 3, s, s)
    y = torch.randint(0, 10, (b,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-5)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    net.train()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
    train_s = (time.perf_counter() - t) / args.steps
    net.eval()
    xi = torch.rand(256, 3, s, s)
    with torch.no_grad():
        net(xi[:16])
        t = time.perf_counter()
        done = 0
        while done < args.infer_images:
            net(xi)
            done += 256
        infer = done / (time.perf_counter() - t)
    print(json.dumps({
        "peer": f"torch {torch.__version__} torchvision {torchvision.__version__}",
        "model": args.model, "image_size": s, "batch_size": b, "threads": torch.get_num_threads(),
        "train_ms_per_step": round(1000 * train_s, 1), "train_images_per_s": round(b / train_s, 1),
        "infer_images_per_s_batch256": round(infer, 1),
    }))


if __name__ == "__main__":
    main()
