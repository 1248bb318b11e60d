"""Builds small PyTorch U-Nets (random weights), exports each with torch.onnx.export and records
an input and onnxruntime's output: tests/onnx_import.rs imports the .onnx with `unetc import`
and compares unetc's CPU executor with onnxruntime.

Run: PYTHONPATH=<dir with torch, segmentation_models_pytorch, monai, dynamic_network_architectures>
python3 generate.py [NAME...]
Writes NAME.onnx and NAME.io.safetensors (input NCHW, output NCHW, float32) beside this file.
For the models in STATE_DICT it also writes NAME.state_dict.safetensors
(`safetensors.torch.save_file(model.state_dict(), ...)`, what a PyTorch user saves) and records
PyTorch's own output as `torch_output` in the io file: tests/onnx_import.rs converts the state_dict
with `unetc convert-weights --from pytorch` and compares with it.
"""
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PlainUNet(nn.Module):
    """The usual PyTorch U-Net: max-pool down, bilinear (align_corners=False) or transposed up."""

    def __init__(self, up="bilinear", cin=3, ncls=2, w=4):
        super().__init__()
        self.up = up
        self.d1, self.d2, self.d3 = block(cin, w), block(w, 2 * w), block(2 * w, 4 * w)
        if up == "transpose":
            self.u2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
            self.u1 = nn.ConvTranspose2d(2 * w, w, 3, stride=2, padding=1, output_padding=1)
            self.c2, self.c1 = block(4 * w, 2 * w), block(2 * w, w)
        else:
            self.c2, self.c1 = block(6 * w, 2 * w), block(3 * w, w)
        self.head = nn.Conv2d(w, ncls, 1)

    def upsample(self, x, k):
        if self.up == "transpose":
            return (self.u2 if k == 2 else self.u1)(x)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x):
        x1 = self.d1(x)
        x2 = self.d2(F.max_pool2d(x1, 2))
        x3 = self.d3(F.max_pool2d(x2, 2))
        y = self.c2(torch.cat([self.upsample(x3, 2), x2], dim=1))
        y = self.c1(torch.cat([self.upsample(y, 1), x1], dim=1))
        return torch.sigmoid(self.head(y))


def randomize_bn(model):
    """Non-trivial running statistics so that BatchNorm matters."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def randomize_affine(model):
    """Distinct affine norm weights and PReLU slopes (their defaults are all ones, zeros or 0.25,
    which would not show a module bound to the wrong layer)."""
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, (nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.PReLU)):
            for p in m.parameters():
                p.data.copy_(torch.rand(p.shape, generator=g) + 0.1)


def unused_stages_dropped(model):
    """smp keeps ResNet's deeper stages at any encoder_depth (11M parameters, 45 MB in a
    state_dict); depth 2 never runs layer2..layer4, so the fixture replaces them by Identity."""
    for name in ("layer2", "layer3", "layer4"):
        setattr(model.encoder, name, nn.Identity())
    return model


def models():
    yield "plain_bilinear", lambda: PlainUNet("bilinear"), (1, 3, 64, 64)
    yield "plain_transpose", lambda: PlainUNet("transpose"), (1, 3, 64, 64)
    yield "plain_align_corners", lambda: AlignCorners(), (1, 3, 16, 16)
    yield "plain_resize_ratio", lambda: ResizeRatio(), (1, 3, 12, 10)
    yield "plain_reflect_pad", lambda: ReflectPad(), (1, 3, 16, 16)
    yield "plain_kinds", lambda: Kinds(), (1, 3, 15, 17)
    yield "plain_kinds3d", lambda: Kinds3D(), (1, 2, 8, 8, 8)
    yield "plain_unet3d_trilinear", lambda: UNet3DTrilinear(), (1, 2, 8, 12, 10)
    yield "plain_trilinear_aligned", lambda: TrilinearAligned(), (1, 2, 3, 5, 4)
    yield "plain_hardswish", lambda: nn.Sequential(nn.Conv2d(3, 2, 1), nn.Hardswish()), (1, 3, 8, 8)
    # The newer exporter (torch.export + onnxscript, opset 18+), weights kept in the file.
    yield "plain_transpose_dynamo", lambda: PlainUNet("transpose"), (1, 3, 64, 64)
    yield "plain_sequential", sequential, (1, 3, 16, 16)
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:
        print("SKIP smp:", e)
    else:
        # ResNet-18 has fixed widths (11M parameters at full depth); encoder_depth keeps the
        # fixtures small: depth 3 (stem, max-pool, layer1, layer2 with its strided
        # down-sampling block) is 0.7M parameters, depth 2 0.16M.
        kw = dict(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=2)
        yield "smp_unet", lambda: smp.Unet(encoder_depth=3, decoder_channels=(16, 8, 4), **kw), (1, 3, 64, 64)
        yield "smp_unetplusplus", lambda: smp.UnetPlusPlus(encoder_depth=2, decoder_channels=(8, 4), **kw), (1, 3, 64, 64)
        yield "smp_linknet", lambda: smp.Linknet(encoder_depth=2, **kw), (1, 3, 64, 64)
        yield "smp_unet_small", lambda: unused_stages_dropped(smp.Unet(encoder_depth=2, decoder_channels=(8, 4), **kw)), (1, 3, 32, 32)
    try:
        from monai.networks import nets
    except ImportError as e:
        print("SKIP monai:", e)
    else:
        yield "monai_unet", lambda: nets.UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1), (1, 1, 32, 32)
        yield "monai_basicunet", lambda: nets.BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4)), (1, 1, 32, 32)
        yield "monai_basicunet_interp", lambda: nets.BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4), upsample="nontrainable"), (1, 1, 32, 32)
        yield "monai_dynunet", lambda: nets.DynUNet(2, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[4, 8, 16]), (1, 1, 32, 32)
        yield "monai_attentionunet", lambda: nets.AttentionUnet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2)), (1, 1, 32, 32)
        # 3-D with nontrainable up-sampling: MONAI's UpSample "linear" becomes trilinear with
        # align_corners=True (as in the 2-D `monai_basicunet_interp`).
        yield "monai_basicunet3d_interp", lambda: nets.BasicUNet(3, 1, 2, features=(2, 2, 4, 4, 4, 2), upsample="nontrainable"), (1, 1, 16, 16, 32)
        yield "monai_unet3d", lambda: nets.UNet(3, 1, 2, channels=(2, 4), strides=(2,), num_res_units=1), (1, 1, 8, 8, 8)
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
    except ImportError as e:
        print("SKIP dynamic_network_architectures (nnU-Net):", e)
    else:
        # nnU-Net's networks as its plans build them: InstanceNorm (affine), LeakyReLU, strided
        # convs down, transposed convs up; no deep supervision (one output). Not in STATE_DICT:
        # their state_dicts hold each tensor under several names (`conv` and `all_modules.0`,
        # `decoder.encoder.` and `encoder.`), which safetensors.torch.save_file refuses and
        # save_model keeps under one name that need not be the one the ONNX export uses.
        norm = {"eps": 1e-5, "affine": True}
        act = (nn.LeakyReLU, {"inplace": True})
        yield "nnunet_plain", lambda: PlainConvUNet(
            1, 3, (4, 8, 16), nn.Conv2d, 3, (1, 2, 2), (2, 2, 2), 2, (2, 2), True,
            nn.InstanceNorm2d, norm, None, None, *act, deep_supervision=False), (1, 1, 32, 32)
        yield "nnunet_plain3d", lambda: PlainConvUNet(
            1, 2, (2, 4), nn.Conv3d, 3, (1, 2), (1, 1), 2, (1,), True,
            nn.InstanceNorm3d, norm, None, None, *act, deep_supervision=False), (1, 1, 8, 8, 8)
        yield "nnunet_resenc", lambda: ResidualEncoderUNet(
            1, 3, (4, 8, 16), nn.Conv2d, 3, (1, 2, 2), (1, 2, 2), 2, (1, 1), True,
            nn.InstanceNorm2d, norm, None, None, *act, deep_supervision=False), (1, 1, 32, 32)


class AlignCorners(nn.Module):
    """Bilinear up-sampling with align_corners=True (unetc's `align_corners: true`)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return F.interpolate(self.conv(x), scale_factor=2, mode="bilinear", align_corners=True)


class ResizeRatio(nn.Module):
    """Bilinear resizing (align_corners=False) by other than whole factors, as nets that bring a
    feature map to a skip's odd size or the input to a fixed size do: to a size (9x13, down one
    axis and up the other, exported as Resize with `sizes`) and by scale_factor 1.5 (18x15,
    exported with `scales`). unetc maps both to Keras's Resizing."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        a = F.interpolate(y, size=(9, 13), mode="bilinear", align_corners=False)
        b = F.interpolate(y, scale_factor=1.5, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size=(9, 13), mode="bilinear", align_corners=False)
        return self.head(torch.cat([a, b], dim=1))


KEEP_BN = {"plain_bilinear", "plain_transpose", "plain_sequential", "smp_unet", "smp_unet_small",
           "monai_attentionunet"}
# The state_dict fixtures: their ONNX keeps BatchNormalization (KEEP_BN), so the imported spec has
# one layer per PyTorch module with parameters.
STATE_DICT = {"plain_transpose", "plain_sequential", "smp_unet_small", "monai_basicunet"}


def sequential():
    """Twelve modules: keys 10 and 11 sort after 9 only in numeric-aware order; the three 4->4
    convolutions have the same shapes, so only the order tells them apart."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.PReLU(4), nn.Conv2d(4, 2, 1))


class Kinds(nn.Module):
    """Odd sizes and the layer kinds the U-Nets above do not use: zero Pad, shared PReLU,
    depthwise, grouped and dilated convs, ELU, LeakyReLU, average pools (counting the padding),
    nearest up-sampling, a global pool gate broadcast over the image, Sub, Tanh, Softmax."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.prelu = nn.PReLU()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.gc = nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2)
        self.elu = nn.ELU(0.7)
        self.sq = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = F.pad(x, (1, 2, 0, 1))
        y = self.prelu(self.c1(x))
        y = F.leaky_relu(self.dw(y), 0.2)
        y = self.elu(self.gc(y))
        a = F.avg_pool2d(y, 3, stride=1, padding=1)
        b = F.interpolate(F.avg_pool2d(y, 2), scale_factor=2, mode="nearest")
        g = torch.sigmoid(self.sq(F.adaptive_avg_pool2d(y, 1)))
        z = torch.tanh(a + b) * g - a
        return torch.softmax(z, dim=1)


class Kinds3D(nn.Module):
    """3-D: conv, instance norm, max-pool, nearest up-sampling, transposed conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv3d(2, 3, 3, padding=1)
        self.n = nn.InstanceNorm3d(3, affine=True)
        self.b = nn.ConvTranspose3d(3, 2, 2, stride=2)

    def forward(self, x):
        y = F.relu(self.n(self.a(x)))
        y = F.interpolate(F.max_pool3d(y, 2), scale_factor=2, mode="nearest")
        return self.b(y)


class ReflectPad(nn.Module):
    """PyTorch's padding modes beyond zeros: a conv with padding_mode="reflect", asymmetric
    replicate padding (ONNX `edge`), nn.ReflectionPad2d, a conv with padding_mode="replicate"."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect")
        self.refl = nn.ReflectionPad2d((3, 0, 1, 2))
        self.conv2 = nn.Conv2d(2, 2, 3, padding=2, dilation=2, padding_mode="replicate")

    def forward(self, x):
        y = F.pad(self.conv(x), (2, 1, 0, 3), mode="replicate")
        return self.conv2(self.refl(y))


class UNet3DTrilinear(nn.Module):
    """A plain two-level 3-D U-Net as PyTorch users write it: nn.Upsample(scale_factor=2,
    mode='trilinear') up, a conv with padding_mode='replicate', nn.ReflectionPad3d,
    nn.ReplicationPad3d and F.pad(mode='replicate') with asymmetric widths, odd sizes."""

    def __init__(self, w=3):
        super().__init__()
        self.d1 = nn.Conv3d(2, w, 3, padding=1, padding_mode="replicate")
        self.d2 = nn.Sequential(nn.ReflectionPad3d(1), nn.Conv3d(w, 2 * w, 3), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.c1 = nn.Sequential(nn.ReplicationPad3d((1, 1, 2, 0, 0, 2)), nn.Conv3d(3 * w, w, 3), nn.ReLU())
        self.head = nn.Conv3d(w, 2, 1)

    def forward(self, x):
        x1 = F.relu(self.d1(x))
        x2 = self.d2(F.max_pool3d(x1, 2))
        y = self.c1(torch.cat([self.up(x2), x1], dim=1))
        y = F.pad(y, (0, 1, 2, 1, 1, 0), mode="replicate")
        y = F.pad(y, (2, 1, 0, 1, 1, 2), mode="reflect")
        return torch.sigmoid(self.head(y))


class TrilinearAligned(nn.Module):
    """Trilinear up-sampling with align_corners=True by different factors per axis, and
    half-pixel trilinear by (1, 2, 3)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 1)

    def forward(self, x):
        y = F.interpolate(self.conv(x), scale_factor=(2, 3, 2), mode="trilinear", align_corners=True)
        return F.interpolate(y, scale_factor=(1, 2, 3), mode="trilinear", align_corners=False)


def main():
    only = set(sys.argv[1:])
    for name, make, shape in models():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = make()
        randomize_bn(model)
        if name in STATE_DICT or name.startswith("nnunet"):
            randomize_affine(model)
        model.eval()
        x = torch.randn(*shape)
        path = os.path.join(HERE, name + ".onnx")
        # TrainingMode.PRESERVE on an eval() model keeps BatchNormalization nodes (the default
        # folds them into the convolutions) so that the importer's BN mapping is tested too.
        mode = torch.onnx.TrainingMode.PRESERVE if name in KEEP_BN else torch.onnx.TrainingMode.EVAL
        if name.endswith("_dynamo"):
            try:
                torch.onnx.export(model, (x,), path, dynamo=True, external_data=False,
                                  input_names=["input"], output_names=["output"])
            except ImportError as e:
                print(f"SKIP {name}: {e}")
                continue
        else:
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, training=mode,
                              input_names=["input"], output_names=["output"])
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        y = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        print(f"{name}: {os.path.getsize(path)} bytes, onnxruntime vs torch {np.abs(y - ref).max():.2e}")
        io = {"input": x.numpy(), "output": y.astype(np.float32)}
        if name in STATE_DICT:
            io["torch_output"] = ref.astype(np.float32)
            save_torch_file(model.state_dict(), os.path.join(HERE, name + ".state_dict.safetensors"))
        save_file(io, os.path.join(HERE, name + ".io.safetensors"))


if __name__ == "__main__":
    main()
