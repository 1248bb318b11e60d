"""A small PyTorch net with torch.nn.MultiheadAttention (real PyTorch from PyPI), for
`unetc convert-weights --from pytorch` on attention: tests/pytorch_weights.rs converts the
state_dict for attention.unet (the same net written as a unetc spec by hand) and compares
unetc's CPU executor with PyTorch's own output.

Run: python3 generate.py   (needs torch, safetensors, numpy)
Writes attention.state_dict.safetensors (`safetensors.torch.save_file(model.state_dict())`,
what a PyTorch user saves) and attention.io.safetensors (`input` NCHW, `torch_output` NCHW).
"""
import os

import numpy as np
import torch
import torch.nn as nn
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

HERE = os.path.dirname(os.path.abspath(__file__))


class TokenAttentionNet(nn.Module):
    """A 1x1 conv stem, the pixels as tokens, self-attention with a residual (one packed
    in_proj_weight and in_proj_bias), cross-attention to keys and values of other widths
    (kdim=6, vdim=5: separate q/k/v_proj_weight) without biases, with a residual, back to the
    image and a 1x1 head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.keys = nn.Conv2d(3, 6, 1)
        self.values = nn.Conv2d(3, 5, 1)
        self.cross = nn.MultiheadAttention(8, 4, kdim=6, vdim=5, bias=False, batch_first=True)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        n, _, h, w = x.shape
        tokens = lambda t: t.flatten(2).transpose(1, 2)  # (N, C, H, W) -> (N, H*W, C)
        t = tokens(self.stem(x))
        a, _ = self.attn(t, t, t, need_weights=False)
        t = t + a
        c, _ = self.cross(t, tokens(self.keys(x)), tokens(self.values(x)), need_weights=False)
        t = t + c
        return self.head(t.transpose(1, 2).reshape(n, 8, h, w))


def main():
    torch.manual_seed(0)
    model = TokenAttentionNet().eval()
    # Biases away from PyTorch's zeros, so that a bias read in the wrong place shows.
    with torch.no_grad():
        model.attn.in_proj_bias.uniform_(-0.5, 0.5)
        model.attn.out_proj.bias.uniform_(-0.5, 0.5)
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    save_torch_file(model.state_dict(), os.path.join(HERE, "attention.state_dict.safetensors"))
    save_file({"input": x.numpy().astype(np.float32),
               "torch_output": y.numpy().astype(np.float32)},
              os.path.join(HERE, "attention.io.safetensors"))
    print("attention:", {k: tuple(v.shape) for k, v in model.state_dict().items()})
    print("output range", float(y.min()), float(y.max()),
          "item spread", float((y[0] - y[1]).abs().max()))


if __name__ == "__main__":
    main()
