"""Generates tests/reference/resnet18_torchvision.safetensors (the state dict of
resnet18_torchvision.pt as a safetensors file) and resnet18_partial.safetensors (the same
without layer4: a file that does not cover the network), for the weight-loading tests.

    pip install torch safetensors
    python tests/reference/resnet_safetensors_reference.py
"""

import pathlib

import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).parent


def main():
    state = torch.load(HERE / "resnet18_torchvision.pt", weights_only=True)
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, HERE / "resnet18_torchvision.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("layer4.")}, HERE / "resnet18_partial.safetensors")


if __name__ == "__main__":
    main()
