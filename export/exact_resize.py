"""The detector graph's test-scale resize in 32-bit integer arithmetic that gives torchvision's numbers exactly.

torchvision sizes an image ``floor(side * min(min_size / short, max_size / long))`` in Python's float64 and PyTorch's
CPU kernel interpolates at ``fl32(ratio * (dst + 0.5) - 0.5)`` with ``ratio = fl32(in / out)``, the product and
difference fused into one rounding. Computed in float32 (a runtime without float64, as OpenVINO on the CPU) the size
differs by a pixel for about one image size in eleven and the coordinates in their last bits, which moves scores of
a sensitive detector by 1e-2; OpenVINO also computes int64 in 32 bits. So every step here is exact int32 arithmetic:

- size: ``floor(side * m / t)`` exactly, less one where float64 itself rounds an exact integer product down (only
  possible when ``side * m / t`` is an integer); whether it does depends on how ``fl64(m / t)`` was rounded, which
  ``size_tables`` precomputes for every ``t`` up to ``MAX_SIDE`` (larger images keep the exact floor);
- coordinates: ``fl32(in / out)`` by binary long division with round-half-even, the product with ``2 dst + 1`` in
  12- and 8-bit limbs, then rounded to 24 significant bits half-even: the value float32 holds, from which the source
  pixels and their weights follow exactly.

``tests/test_detection_onnx.py`` holds both to Python's float64 and to ``F.interpolate`` over many sizes, in eager
PyTorch, ONNX Runtime and OpenVINO.
"""

from __future__ import annotations

import math

import torch

MAX_SIDE = 16384  # the longest side whose float64 rounding is tabulated (beyond: the exact floor)
POWERS = torch.tensor([1 << bit for bit in range(31)], dtype=torch.int32)  # 2^0 .. 2^30
FRACTIONS = torch.tensor([2.0**-bit for bit in range(64)], dtype=torch.float32)  # 2^0 .. 2^-63, exact
I32 = torch.int32


def size_tables(target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For t = 0 .. MAX_SIDE: ``D_t = q t 2^(52 - lt) - target 2^(52 - lt)`` (q = fl64(target / t) = M 2^(lt - 52)),
    the signed error of the quotient in units of its last place, and ``lt = floor(log2 q)``; t = 0 holds zeros."""
    errors, exponents = [0], [0]
    for t in range(1, MAX_SIDE + 1):
        mantissa, exponent = math.frexp(target / t)  # q = mantissa * 2^exponent, mantissa in [0.5, 1)
        scaled = int(mantissa * (1 << 53))  # q = scaled * 2^(exponent - 53)
        shift = 53 - exponent
        errors.append(scaled * t - (target << shift) if shift >= 0 else 0)
        exponents.append(exponent - 1)
    return torch.tensor(errors, dtype=I32), torch.tensor(exponents, dtype=I32)


def floor_log2(values: torch.Tensor) -> torch.Tensor:
    """floor(log2 v) of positive int32 values (by comparison with the powers of two)."""
    return (values.unsqueeze(-1) >= POWERS).to(I32).sum(-1) - 1


def power_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """2^e for int32 exponents in [0, 30] (clamped there)."""
    return POWERS[exponent.clamp(0, 30).long()]


def div(values: torch.Tensor, divisor: torch.Tensor | int) -> torch.Tensor:
    """Floor division of non-negative int32 values (ONNX Div truncates, which is the floor here)."""
    return torch.div(values, divisor, rounding_mode="trunc")


def mod(values: torch.Tensor, divisor: torch.Tensor | int) -> torch.Tensor:
    """The remainder of ``div``."""
    return values - div(values, divisor) * divisor


def float64_size(sides: torch.Tensor, min_size: int, max_size: int, tables: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """torchvision's ``floor(side * scale)`` for int32 ``[2]`` (height, width), ``scale`` as Python's float64 gives
    it; ``tables``: ``size_tables(min_size) + size_tables(max_size)``."""
    min_errors, min_exponents, max_errors, max_exponents = tables
    short, long = sides.min().reshape(1), sides.max().reshape(1)
    use_min = min_size * long <= max_size * short  # the smaller scale: exact, two distinct fractions never tie
    target = torch.where(use_min, torch.full_like(short, min_size), torch.full_like(short, max_size))
    divisor = torch.where(use_min, short, long)
    product = sides * target
    floor = div(product, divisor)
    exact = product - floor * divisor == 0
    index = divisor.clamp(0, MAX_SIDE).long()
    error = torch.where(use_min, min_errors[index], max_errors[index])
    exponent = torch.where(use_min, min_exponents[index], max_exponents[index])
    # float64 rounds N = side * target / t (an integer) below N when q's relative error times N exceeds half the
    # gap below N: N |D| > target 2^k, k = floor(log2 N) - 1 - lt (one less where N is a power of two)
    magnitude = floor.clamp(min=1)
    log_n = floor_log2(magnitude)
    k = log_n - 1 - exponent - (magnitude == power_of_two(log_n)).to(I32)
    lhs = magnitude * error.abs()
    shifted = k >= 0  # lhs > target 2^k; (for k < 0, 2^16 alone exceeds any target)
    above = (shifted & (div((lhs - 1).clamp(min=0), power_of_two(k)) >= target)) | (
        ~shifted & (lhs.clamp(max=1 << 16) * power_of_two(-k.clamp(min=-12, max=0)) > target)
    )
    rounds_down = exact & (error < 0) & above & (divisor <= MAX_SIDE) & (floor >= 1)
    return floor - rounds_down.to(I32)


def float32_ratio(input_size: torch.Tensor, output_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fl32(in / out)`` as ``(R, E)`` with ``R`` in [2^23, 2^24] and value ``R * 2^E`` (int32 ``[1]`` each), by
    long division rounded half to even, as IEEE division rounds (sides below 2^15)."""
    # p = floor(log2(in / out)): the largest p in [-16, 15] with out * 2^p <= in
    candidates = torch.arange(-16, 16, dtype=I32)
    fits = input_size * power_of_two(-candidates) >= output_size * power_of_two(candidates)
    p = fits.to(I32).sum().reshape(1) - 17
    # floor(in / out * 2^(24 - p)): 25 bits, 24 of the mantissa and a guard bit; ``remainder`` decides ties
    quotient = torch.where(p >= 0, div(input_size, output_size), torch.zeros_like(p))
    remainder = torch.where(p >= 0, input_size - quotient * output_size, input_size)
    steps = 24 - p
    for step in range(41):  # unrolled long division, one bit while ``step < steps``
        active = step < steps
        doubled = remainder * 2
        bit = (doubled >= output_size).to(I32)
        remainder = torch.where(active, doubled - bit * output_size, remainder)
        quotient = torch.where(active, quotient * 2 + bit, quotient)
    guard, mantissa = mod(quotient, 2), div(quotient, 2)
    round_up = (guard == 1) & ((remainder > 0) | (mod(mantissa, 2) == 1))
    return mantissa + round_up.to(I32), p - 23


def source_pixels(input_size: torch.Tensor, output_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per output pixel of one axis (int32 ``[1]`` sizes): the two input pixels (int64) and their float32 weights,
    exactly as PyTorch's CPU bilinear kernel computes them: ``fl32(ratio * (dst + 0.5) - 0.5)``, clamped at 0."""
    mantissa, exponent = float32_ratio(input_size, output_size)
    odd = torch.arange(output_size[0], dtype=I32) * 2 + 1  # 2 dst + 1, below 2^16
    high, low = div(mantissa, 1 << 12), mod(mantissa, 1 << 12)  # 13 and 12 bits
    odd_high, odd_low = div(odd, 1 << 8), mod(odd, 1 << 8)  # 8 and 8 bits
    # mantissa * odd = a 2^20 + b 2^12 + c 2^8 + d, gathered as top 2^24 + bottom (every term below 2^31)
    a, b, c, d = high * odd_high, high * odd_low, low * odd_high, low * odd_low
    top = div(a, 1 << 4) + div(b, 1 << 12) + div(c, 1 << 16)
    bottom = mod(a, 1 << 4) * (1 << 20) + mod(b, 1 << 12) * (1 << 12) + mod(c, 1 << 16) * (1 << 8) + d
    top, bottom = top + div(bottom, 1 << 24), mod(bottom, 1 << 24)
    # X = mantissa * odd - 2^(-exponent); real = X 2^(exponent - 1)
    minus = -exponent  # in [8, 39]
    top = top - torch.where(minus >= 24, power_of_two(minus - 24), torch.zeros_like(minus))
    bottom = bottom - torch.where(minus < 24, power_of_two(minus), torch.zeros_like(minus))
    borrow = (bottom < 0).to(I32)
    top, bottom = top - borrow, bottom + borrow * (1 << 24)
    negative = top < 0  # real < 0: PyTorch clamps the coordinate at 0
    top = top.clamp(min=0)
    # X rounded to 24 significant bits, half to even: ``dropped`` low bits go, all of them inside ``bottom``
    dropped = torch.where(top > 0, floor_log2(top.clamp(min=1)) + 1, torch.zeros_like(top))
    unit = power_of_two(dropped)
    kept = top * power_of_two(24 - dropped) + div(bottom, unit)
    rest, half = mod(bottom, unit), div(unit, 2)
    kept = kept + ((dropped > 0) & ((rest > half) | ((rest == half) & (mod(kept, 2) == 1)))).to(I32)
    # real = kept 2^-shift: its floor and the fraction (exact in float32: at most 24 bits)
    shift = 1 - dropped - exponent
    scale = power_of_two(shift)  # beyond 2^30 the floor is 0 anyway (kept < 2^25)
    first = div(kept, scale)
    fraction = (kept - first * scale).to(torch.float32) * FRACTIONS[shift.clamp(0, 63).long()]
    first = torch.where(negative, torch.zeros_like(first), first)
    fraction = torch.where(negative, torch.zeros_like(fraction), fraction)
    last = input_size - 1
    # as before: first = min(floor(real), last), weight = clamp(real - first, 0, 1)
    weight = torch.where(first > last, torch.ones_like(fraction), fraction)
    first = torch.min(first, last)
    return first.long(), torch.min(first + 1, last).long(), 1 - weight, weight
