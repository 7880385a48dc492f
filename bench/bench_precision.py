"""Benchmark: the bundled-width UNet11's training step and inference forward on the CPU, in the
memory layouts and precisions the training and inference code choose between.

Why: training uses bf16 autocast with channels_last on CPUs that have AMX or AVX512-BF16, and
inference uses channels_last in fp32; this shows what each buys against plain fp32 NCHW (the
baseline), measured in the same run, on the same random batches. Prints the median seconds
per call and the speed-up against the baseline.

    .venv/bin/python bench/bench_precision.py [--width 0.25] [--batch 8] [--tile 256] [--repeats 6]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sn6_footprints.core.devices import cpu_supports_bf16  # noqa: E402
from sn6_footprints.core.model import UNet11  # noqa: E402
from sn6_footprints.core.training import dice_focal_loss  # noqa: E402

MODES = (("fp32 NCHW (baseline)", False, None), ("fp32 channels_last", True, None),
         ("bf16 NCHW", False, torch.bfloat16), ("bf16 channels_last", True, torch.bfloat16))


def _timed(call, repeats: int) -> float:
    times = []
    for index in range(repeats + 2):  # two warm-up calls (oneDNN picks its kernels)
        started = time.perf_counter()
        call()
        if index >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(width: float, batch: int, tile: int, repeats: int) -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 4, tile, tile, generator=generator)
    masks = (torch.rand(batch, 1, tile, tile, generator=generator) > 0.7).float()
    valid = torch.ones_like(masks)
    for name, channels_last, dtype in MODES:
        if dtype is not None and not cpu_supports_bf16():
            rows.append({"mode": name, "train_s": None, "infer_s": None})
            continue
        torch.manual_seed(0)
        model = UNet11(4, width)
        x = images
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def train_step(model=model, x=x, dtype=dtype, optimizer=optimizer):  # bound now: run in this iteration
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = model(x)
            loss = dice_focal_loss(logits, masks, valid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        @torch.inference_mode()
        def forward(model=model, x=x, dtype=dtype):
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                torch.sigmoid(model(x).float())

        model.train()
        train_s = _timed(train_step, repeats)
        model.eval()
        rows.append({"mode": name, "train_s": train_s, "infer_s": _timed(forward, repeats)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args(argv)
    rows = run(args.width, args.batch, args.tile, args.repeats)
    print(f"UNet11 width {args.width:g}, batch {args.batch} x 4 x {args.tile}², {torch.get_num_threads()} threads, "
          f"CPU bf16 instructions: {'yes' if cpu_supports_bf16() else 'no'}")
    print(f"{'mode':<22} {'train step s':>12} {'speed-up':>9} {'forward s':>10} {'speed-up':>9} {'Mpx/s':>7}")
    base = rows[0]
    megapixels = args.batch * args.tile ** 2 / 1e6
    for row in rows:
        if row["train_s"] is None:
            print(f"{row['mode']:<22} {'(no bf16 on this CPU)':>12}")
            continue
        print(f"{row['mode']:<22} {row['train_s']:>12.3f} {base['train_s'] / row['train_s']:>8.1f}x "
              f"{row['infer_s']:>10.3f} {base['infer_s'] / row['infer_s']:>8.1f}x {megapixels / row['infer_s']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
