"""Print depth, parameters and multiply-adds of every registered model beside the paper's figures."""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from .paper import TABLE1_GFLOPS, TABLE6_PARAMS_M
from .registry import create_model, list_models, model_info


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_multiply_adds(model: torch.nn.Module, input_size: int) -> int:
    """Multiply-adds of one forward pass on a 1x3xSxS input (torch's FLOP counter counts 2 per MAC)."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() // 2


def summarize(names: list[str] | None = None, **options) -> list[dict]:
    """One row per model: name, depth, params, multiply-adds and the paper's reference figures."""
    rows = []
    for name in names or list_models():
        info = model_info(name)
        # plain twins have no shortcut to choose
        model_options = options if info.residual else {k: v for k, v in options.items() if k != "shortcut"}
        model = create_model(name, **model_options)
        paper_gmacs = TABLE1_GFLOPS.get(info.depth) if info.family == "imagenet" and info.residual else None
        paper_params = TABLE6_PARAMS_M.get(info.depth) if info.family == "cifar10" and info.residual else None
        rows.append(
            {
                "name": name,
                "depth": info.depth,
                "input": info.input_size,
                "params": count_parameters(model),
                "macs": count_multiply_adds(model, info.input_size),
                "paper_gmacs": paper_gmacs,
                "paper_params_m": paper_params,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """Render rows as a fixed-width text table."""
    header = f"{'model':<16}{'depth':>6}{'input':>7}{'params':>14}{'paper':>9}{'GMACs':>10}{'paper':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        paper_params = f"{row['paper_params_m']:.2f}M" if row["paper_params_m"] else "-"
        paper_gmacs = f"{row['paper_gmacs']:.1f}" if row["paper_gmacs"] else "-"
        lines.append(
            f"{row['name']:<16}{row['depth']:>6}{row['input']:>7}{row['params']:>14,}{paper_params:>9}"
            f"{row['macs'] / 1e9:>10.3f}{paper_gmacs:>8}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """CLI entry point: print the table and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("models", nargs="*", help="model names (default: all registered)")
    parser.add_argument("--shortcut", choices=["A", "B", "C"], default=None, help="shortcut option override")
    parser.add_argument("--stride-in-3x3", action="store_true", help="torchvision v1.5 layout instead of the paper's")
    args = parser.parse_args(argv)
    options = {"stride_in_1x1": not args.stride_in_3x3}
    if args.shortcut:
        options["shortcut"] = args.shortcut
    rows = summarize(args.models or None, **options)
    print(format_table(rows))
    print("\nGMACs: multiply-adds per image (the paper's 'FLOPs'); paper columns: Table 1 and Table 6.")
    return rows


if __name__ == "__main__":
    main()
