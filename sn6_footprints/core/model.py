"""TernausNet "UNet11": a U-Net whose encoder is VGG11's convolutional part.

Laid out exactly as the SpaceNet 6 baseline (REFERENCE.md §2) so that its 56-key
state_dict loads with ``strict=True``: the encoder is a ``Sequential`` and the aliases
``conv1`` ... ``conv5`` are registered as modules too, hence every encoder tensor appears
twice in the state_dict. ``width`` scales every channel count (1 = the baseline); the
bundled CPU model uses a fraction of it. ``out_channels`` is the number of logit maps: 1 for
the baseline (its ``final`` is (1, 32, 1, 1)); an instance-aware model adds edge and contact
channels after the footprint one (their names live in the checkpoint's metadata, not here).
"""
from __future__ import annotations

import torch
from torch import nn

# VGG11 (configuration "A") convolution widths; "M" is a 2x2 max-pool.
VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
ENCODER_ALIASES = {
    "conv1": 0, "conv2": 3, "conv3s": 6, "conv3": 8,
    "conv4s": 11, "conv4": 13, "conv5s": 16, "conv5": 18,
}
BASE_NUM_FILTERS = 32
INPUT_MULTIPLE_PX = 32  # five 2x poolings


def scaled(channels: int, width: float) -> int:
    """A channel count scaled by the width multiplier, never below 1."""
    return max(1, int(round(channels * width)))


class ConvRelu(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(x))


class DecoderBlock(nn.Module):
    """3x3 conv + ReLU, then a 2x transposed-conv upsampling + ReLU."""

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            ConvRelu(in_channels, middle_channels),
            nn.ConvTranspose2d(middle_channels, out_channels, kernel_size=3, stride=2,
                               padding=1, output_padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def vgg11_features(in_channels: int, width: float = 1.0) -> nn.Sequential:
    """VGG11's ``features`` (no batch norm) with ``in_channels`` inputs."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG11_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out = scaled(item, width)
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = out
    return nn.Sequential(*layers)


class UNet11(nn.Module):
    """U-Net with a VGG11 encoder; ``out_channels`` maps of raw logits (1 by default).

    Height and width of the input must be multiples of 32.
    """

    def __init__(self, in_channels: int = 4, width: float = 1.0, out_channels: int = 1):
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"UNet11 needs at least one output channel, not {out_channels}.")
        self.in_channels = in_channels
        self.width = width
        self.out_channels = out_channels
        c = lambda n: scaled(n, width)  # noqa: E731 - reads like the diagram
        nf = c(BASE_NUM_FILTERS)
        self.pool = nn.MaxPool2d(2, 2)
        self.relu = nn.ReLU(inplace=True)
        self.encoder = vgg11_features(in_channels, width)
        for alias, index in ENCODER_ALIASES.items():
            setattr(self, alias, self.encoder[index])
        self.center = DecoderBlock(c(512), nf * 16, nf * 8)
        self.dec5 = DecoderBlock(nf * 8 + c(512), nf * 16, nf * 8)
        self.dec4 = DecoderBlock(nf * 8 + c(512), nf * 16, nf * 4)
        self.dec3 = DecoderBlock(nf * 4 + c(256), nf * 8, nf * 2)
        self.dec2 = DecoderBlock(nf * 2 + c(128), nf * 4, nf)
        self.dec1 = ConvRelu(nf + c(64), nf)
        self.final = nn.Conv2d(nf, out_channels, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for every convolution: without batch norm, PyTorch's default
        init lets activations shrink through the eleven-layer encoder and training from
        scratch stalls. (Loaded checkpoints overwrite all of this.)"""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out" if isinstance(module, nn.Conv2d)
                                        else "fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv1 = self.relu(self.conv1(x))
        conv2 = self.relu(self.conv2(self.pool(conv1)))
        conv3 = self.relu(self.conv3(self.relu(self.conv3s(self.pool(conv2)))))
        conv4 = self.relu(self.conv4(self.relu(self.conv4s(self.pool(conv3)))))
        conv5 = self.relu(self.conv5(self.relu(self.conv5s(self.pool(conv4)))))
        center = self.center(self.pool(conv5))
        dec5 = self.dec5(torch.cat([center, conv5], 1))
        dec4 = self.dec4(torch.cat([dec5, conv4], 1))
        dec3 = self.dec3(torch.cat([dec4, conv3], 1))
        dec2 = self.dec2(torch.cat([dec3, conv2], 1))
        dec1 = self.dec1(torch.cat([dec2, conv1], 1))
        return self.final(dec1)
