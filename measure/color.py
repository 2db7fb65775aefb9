"""Colour difference: sRGB -> CIELAB (D65) and CIEDE2000, for the quality benchmark's colour error.

Written from the CIE formulas (CIE 15:2004 for Lab; Sharma, Wu and Dalal 2005 for the CIEDE2000
implementation notes: hue angles in degrees, mean hue across the 180-degree wrap, zero chroma cases).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)


def srgb_to_lab(rgb: Tensor) -> Tensor:
    """[..., 3] sRGB in [0, 1] -> [..., 3] CIELAB (L in [0, 100]) under D65."""
    c = rgb.to(torch.float64).clamp(0, 1)
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _D65
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > eps, xyz.clamp_min(1e-12) ** (1 / 3), (kappa * xyz + 16) / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1: Tensor, lab2: Tensor) -> Tensor:
    """[...] CIEDE2000 colour difference of [..., 3] Lab colours (kL = kC = kH = 1)."""
    L1, a1, b1 = lab1.to(torch.float64).unbind(-1)
    L2, a2, b2 = lab2.to(torch.float64).unbind(-1)
    c_mean7 = ((torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(c_mean7 / (c_mean7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p, h2p = _hue_deg(b1, a1p), _hue_deg(b2, a2p)

    dL, dC = L2 - L1, c2p - c1p
    both = (c1p * c2p) != 0
    dh = h2p - h1p
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    dh = torch.where(both, dh, torch.zeros_like(dh))
    dH = 2 * torch.sqrt(c1p * c2p) * torch.sin(torch.deg2rad(dh / 2))

    L_mean, C_mean = (L1 + L2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    far = (h1p - h2p).abs() > 180
    h_mean = torch.where(far, torch.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum) / 2
    h_mean = torch.where(both, h_mean, h_sum)
    T = (1 - 0.17 * _cosd(h_mean - 30) + 0.24 * _cosd(2 * h_mean) + 0.32 * _cosd(3 * h_mean + 6)
         - 0.20 * _cosd(4 * h_mean - 63))
    d_theta = 30 * torch.exp(-(((h_mean - 275) / 25) ** 2))
    C7 = C_mean**7
    R_C = 2 * torch.sqrt(C7 / (C7 + 25.0**7))
    S_L = 1 + 0.015 * (L_mean - 50) ** 2 / torch.sqrt(20 + (L_mean - 50) ** 2)
    S_C = 1 + 0.045 * C_mean
    S_H = 1 + 0.015 * C_mean * T
    R_T = -torch.sin(torch.deg2rad(2 * d_theta)) * R_C
    return torch.sqrt((dL / S_L) ** 2 + (dC / S_C) ** 2 + (dH / S_H) ** 2 + R_T * (dC / S_C) * (dH / S_H))


def delta_e_rgb(rgb1: Tensor, rgb2: Tensor) -> Tensor:
    """[...] CIEDE2000 between two sRGB colours [..., 3] in [0, 1]."""
    return ciede2000(srgb_to_lab(rgb1), srgb_to_lab(rgb2))


def _hue_deg(b: Tensor, a: Tensor) -> Tensor:
    h = torch.rad2deg(torch.atan2(b, a))
    h = torch.where(h < 0, h + 360, h)
    return torch.where((a == 0) & (b == 0), torch.zeros_like(h), h)


def _cosd(deg: Tensor) -> Tensor:
    return torch.cos(deg * (math.pi / 180))
