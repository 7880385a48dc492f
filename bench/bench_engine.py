"""Benchmark: the extraction engine against the SN6 baseline's own loop and the bare model.

Why: the engine should cost little more than the model itself (engine / forward <= 1.15) and
beat the plain baseline loop (>= 1.5x its throughput with the full-width model). All paths are
measured in the same run, on the same simulated scenes, each in its own child process (so peak
RSS is per path), rounds alternating between paths, the minimum of --repeats kept.

Paths: sn6-loop (tests/helpers/sn6_reference_loop.py: the whole raster in RAM, a batch per SN6
tile's windows, float64 stitching), forward (the engine's windows, read and normalised
beforehand, through the Predictor only: the floor), engine (extract_footprints, defaults: Auto
tiles), engine-512 (the same with 512 px tiles, the default before Auto tiles), sn6-exact (the
engine's preset of the baseline's steps).

    .venv/bin/python bench/bench_engine.py [--quick] [--sizes 2048:full,8192:bundled,20000:bundled:engine]
        [--paths sn6-loop,forward,engine,sn6-exact] [--repeats 3] [--device cpu] [--markdown]
    .venv/bin/python bench/bench_engine.py --compare-precision --size 1024   # bf16 vs fp32 polygons
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess  # nosec B404 - runs this script and the project's own CLI
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape  # nosec B406 - writes XML, parses none

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = ("sn6-loop", "forward", "engine", "engine-512", "sn6-exact")
STAGES = ("read", "model", "blend", "vectorize", "write")
PX_PER_KM2 = (1000 / 0.5) ** 2          # at 0.5 m
GFLOP_PER_TILE_FULL = 206.0             # UNet11 at width 1 on a 512 x 512 tile (REFERENCE.md §2)
BASE_SCENE_PX = 4096                    # larger sizes repeat one simulated scene in a VRT
DEFAULT_SIZES = "2048:full,8192:bundled,20000:bundled:engine"
QUICK_SIZES = "1024:full,1024:bundled"


# ---------------------------------------------------------------- inputs
def simulate(path: Path, size: int, seed: int = 7) -> Path:
    if not path.exists():
        subprocess.run([sys.executable, "-m", "sn6_footprints", "simulate", "--size", str(size), "--seed", str(seed),
                        "--quiet", str(path), str(path.with_suffix(".gpkg"))], check=True, cwd=ROOT)  # nosec B603
    return path


def repeated_vrt(path: Path, source: Path, size: int) -> Path:
    """A size x size VRT that repeats ``source`` side by side: a big scene without a big file."""
    import rasterio
    with rasterio.open(source) as ds:
        base, bands, t, crs = ds.width, ds.count, ds.transform, ds.crs.to_wkt()
    n = -(-size // base)
    lines = [f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">', f"<SRS>{escape(crs)}</SRS>",
             f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>"]
    for band in range(1, bands + 1):
        lines.append(f'<VRTRasterBand dataType="Float32" band="{band}"><NoDataValue>0</NoDataValue>')
        for i in range(n):
            for j in range(n):
                w, h = min(base, size - j * base), min(base, size - i * base)
                lines.append(f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename>'
                             f'<SourceBand>{band}</SourceBand>'
                             f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                             f'<DstRect xOff="{j * base}" yOff="{i * base}" xSize="{w}" ySize="{h}"/></SimpleSource>')
        lines.append("</VRTRasterBand>")
    lines.append("</VRTDataset>")
    path.write_text("\n".join(lines))
    return path


def scene(workdir: Path, size: int) -> Path:
    if size <= BASE_SCENE_PX:
        return simulate(workdir / f"scene_{size}.tif", size)
    return repeated_vrt(workdir / f"scene_{size}.vrt", simulate(workdir / f"scene_{BASE_SCENE_PX}.tif", BASE_SCENE_PX),
                        size)


def checkpoint(workdir: Path, name: str) -> Path:
    """'bundled' (the shipped width-0.25 model) or 'full': width 1.0, He-initialised, seed 0."""
    from sn6_footprints.core.bundled import bundled_model_path
    if name == "bundled":
        return bundled_model_path()
    path = workdir / "unet11_full_seed0.pt"
    if not path.exists():
        import torch
        from sn6_footprints.core.model import UNet11
        from sn6_footprints.core.settings import ModelSettings
        from sn6_footprints.core.weights import save_model
        torch.manual_seed(0)
        save_model(path, UNet11(width=1.0), ModelSettings(width=1.0, description="benchmark: random full-width UNet11"))
    return path


# ---------------------------------------------------------------- one path, in a child process
def _warm_up(model, predictor_like, device) -> None:
    import numpy as np
    batch = np.zeros((4, model.in_channels, 512, 512), np.float32)
    for _ in range(2):
        predictor_like(batch)


def child(args) -> dict:
    from sn6_footprints.cli import GDAL_CACHE_MB

    # GDAL's block cache as the CLI and the plugin's worker set it (else 5 % of the RAM, which
    # a 20,000² scene fills and the peak RSS would count)
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    import numpy as np
    import rasterio
    import torch

    from sn6_footprints.core.devices import resolve_device
    from sn6_footprints.core.engine.predictor import Predictor, normalise
    from sn6_footprints.core.engine.tiling import TilingOptions, plan_tile_rows
    from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
    from sn6_footprints.core.weights import load_model
    from tests.helpers.sn6_reference_loop import reference_sn6_raster, window_corners  # ROOT is on sys.path

    model, settings = load_model(args.model)
    device = resolve_device(args.device)
    from sn6_footprints.core.raster_windows import look_preserving_flip_axis

    # the same passes per tile as the engine runs with the model's settings (flip averaging
    # doubles them), so the floor is the engine's own model work
    flip_axis = look_preserving_flip_axis(settings.look_direction) if settings.flip_average else None
    predictor = Predictor(model, device, precision=args.precision, flip_axis=flip_axis)
    _warm_up(model, predictor, device)          # oneDNN / cuDNN pick their kernels
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: dict = {"path": args.child, "stages": {}}
    with rasterio.open(args.raster) as ds:
        width, height = ds.width, ds.height
    out["pixels"] = width * height
    started = time.perf_counter()
    if args.child == "sn6-loop":
        timings: dict = {}
        polygons = reference_sn6_raster(args.raster, model, mean=settings.mean, std=settings.std, timings=timings,
                                        device=str(device))
        out["stages"] = {"read": timings.get("read"), "model": timings.get("model"), "blend": timings.get("stitch"),
                         "vectorize": timings.get("vectorize")}
        out["polygons"] = len(polygons)
        out["windows"] = len(window_corners(height)) * len(window_corners(width))
        out["computed_px"] = out["windows"] * 512 * 512
    elif args.child == "forward":
        tiling = TilingOptions().fitted(width, height)  # the engine's own tiles
        windows = [w for row in plan_tile_rows(width, height, tiling.tile_size_px, tiling.effective_overlap_px)
                   for w in row]
        with rasterio.open(args.raster) as ds:
            data = normalise(ds.read(out_dtype="float32"), settings)
        tiles = np.stack([data[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] for w in windows])
        del data
        sync()
        started = time.perf_counter()
        for first in range(0, len(tiles), tiling.batch_size):
            predictor(tiles[first:first + tiling.batch_size])
        sync()
        out["stages"] = {"model": time.perf_counter() - started}
        out["windows"] = len(windows)
        out["computed_px"] = sum(w.width * w.height for w in windows)
    else:
        tiling = TilingOptions(512, 64, 4) if args.child == "engine-512" else TilingOptions()
        options = ExtractionOptions(model_path=str(args.model), device=args.device, precision=args.precision,
                                    preset="sn6-exact" if args.child == "sn6-exact" else "default", tiling=tiling)
        try:
            result = extract_footprints(args.raster, options)
        except (NotImplementedError, ValueError) as exc:
            return {"path": args.child, "unavailable": str(exc)[:200]}
        out["stages"] = {k: result.seconds.get(k) for k in STAGES}
        out["engine_seconds"] = result.seconds
        out["polygons"] = len(result)
        if args.child == "sn6-exact":  # the baseline's 512 px windows stepped by 512
            windows = [None] * (len(window_corners(height)) * len(window_corners(width)))
            out["computed_px"] = len(windows) * 512 * 512
        else:
            fitted = tiling.fitted(width, height)
            windows = [w for row in plan_tile_rows(width, height, fitted.tile_size_px, fitted.effective_overlap_px)
                       for w in row]
            out["computed_px"] = sum(w.width * w.height for w in windows)
        out["windows"] = len(windows)
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["width"] = settings.width
    return out


def run_child(path: str, raster: Path, model: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", path, "--raster", str(raster), "--model", str(model),
               "--device", args.device, "--precision", args.precision]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)  # nosec B603
    if done.returncode != 0:
        return {"path": path, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report
def machine() -> str:
    import torch
    name = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"CPU {name}, {os.cpu_count()} cores, torch {torch.__version__} threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    return text


def peak_tflops(device_name: str) -> float | None:
    """bf16 dense peak of the cards we know (SXM)."""
    return 989.0 if any(k in device_name for k in ("H100", "H200")) else None


def fmt(value, spec="{:.2f}") -> str:
    return "-" if value is None else spec.format(value)


def report(rows: list[dict], args) -> None:
    import torch
    print(machine())
    print("Stage shares are busy seconds / wall seconds; the engine's stages overlap (threads), so they may "
          "add up to more than 100%.")
    header = ["size", "model", "path", "Mpx/s", "s/km² @0.5 m", "peak RSS MB", "polygons"] + list(STAGES)
    if args.flops:
        header.append("TFLOP/s")
    table = []
    for r in rows:
        label = [f"{r['size']}²", r["model"], r["path"] + (f" ({r['windows']} windows)" if r.get("windows") else "")]
        if "error" in r or "unavailable" in r:
            table.append(label + ["not available" if "unavailable" in r else f"error: {r['error']}"]
                         + [""] * (len(header) - 4))
            continue
        mpx = r["pixels"] / r["seconds"] / 1e6
        shares = [fmt(None if r["stages"].get(s) is None else 100 * r["stages"][s] / r["seconds"], "{:.0f}%")
                  for s in STAGES]
        line = label + [f"{mpx:.3f}", f"{4 / mpx:.1f}", f"{r['peak_rss_mb']:.0f}", str(r.get("polygons", "-"))] + shares
        if args.flops:
            tflops = None
            if r.get("computed_px"):  # the pixels the model ran over, at 206 GFLOP per 512² at width 1
                tflops = r["computed_px"] / 512 ** 2 * GFLOP_PER_TILE_FULL * r["width"] ** 2 / r["seconds"] / 1e3
            line.append(fmt(tflops))
        table.append(line)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    for line in [header] + table:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    if args.markdown:
        print()
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in table:
            print("| " + " | ".join(str(x) for x in line) + " |")
    print()
    for size, model in dict.fromkeys((r["size"], r["model"]) for r in rows):
        got = {r["path"]: r for r in rows if r["size"] == size and r["model"] == model and "seconds" in r}
        notes = []
        if "engine" in got and "forward" in got:
            notes.append(f"engine/forward time {got['engine']['seconds'] / got['forward']['seconds']:.2f} "
                         "(target <= 1.15)")
        if "engine" in got and "sn6-loop" in got:
            notes.append(f"engine vs SN6 loop throughput {got['sn6-loop']['seconds'] / got['engine']['seconds']:.2f}x "
                         "(target >= 1.5x with the full-width model)")
        if "engine" in got and "engine-512" in got:
            notes.append(f"Auto tiles vs 512 px tiles {got['engine-512']['seconds'] / got['engine']['seconds']:.2f}x")
        if "sn6-exact" in got and "sn6-loop" in got:
            notes.append(f"sn6-exact vs SN6 loop {got['sn6-loop']['seconds'] / got['sn6-exact']['seconds']:.2f}x")
        if notes:
            print(f"{size}² {model}: " + "; ".join(notes))
    if args.flops and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = peak_tflops(name)
        print(f"{name}: bf16 dense peak {fmt(peak, '{:.0f}')} TFLOP/s (TFLOP/s column: 206 GFLOP x width² per "
              "512² of the pixels each path's model runs over, flip averaging not counted)")


def compare_precision(args) -> int:
    """bf16 against fp32 on one simulated scene with the bundled model: footprints agree."""
    from shapely import union_all

    from sn6_footprints.core.bundled import bundled_model_path
    from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sn6-bench-"))
    raster = scene(workdir, args.size)
    results = {p: extract_footprints(raster, ExtractionOptions(model_path=str(bundled_model_path()), device=args.device,
                                                               precision=p)) for p in ("float32", "bfloat16")}
    a, b = (union_all(results[p].geometries) for p in ("float32", "bfloat16"))
    iou = a.intersection(b).area / max(a.union(b).area, 1e-9)
    n32, n16 = len(results["float32"]), len(results["bfloat16"])
    count_change = abs(n16 - n32) / max(n32, 1)
    ok = iou >= 0.98 and count_change <= 0.03
    print(f"bf16 vs fp32 on {args.size}² ({args.device}): {n32} vs {n16} polygons ({100 * count_change:.1f}% apart, "
          f"tolerance 3%), footprint IoU {iou:.4f} (tolerance >= 0.98): {'OK' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="size:model[:paths+] list; model full or bundled")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_SIZES}, 1 repeat")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--flops", action="store_true", help="print the model's achieved TFLOP/s")
    parser.add_argument("--workdir", help="keep scenes and checkpoints here (default: a new temporary folder)")
    parser.add_argument("--compare-precision", action="store_true", help="bf16 vs fp32 polygons instead")
    parser.add_argument("--size", type=int, default=1024, help="scene size for --compare-precision")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--raster", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.compare_precision:
        return compare_precision(args)
    if args.quick:
        args.sizes, args.repeats = QUICK_SIZES, 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sn6-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    wanted = args.paths.split(",")
    rows = []
    for spec in args.sizes.split(","):
        size, model_name, *only = spec.split(":")
        paths = [p for p in wanted if not only or p in only[0].split("+")]
        raster, model = scene(workdir, int(size)), checkpoint(workdir, model_name)
        best: dict[str, dict] = {}
        for _ in range(args.repeats):                  # rounds alternate between the paths
            for path in paths:
                got = run_child(path, raster, model, args)
                print(f"  {size}² {model_name} {path}: "
                      f"{got.get('seconds', got.get('error') or got.get('unavailable'))}", file=sys.stderr)
                old = best.get(path)
                if old is None or ("seconds" in got and ("seconds" not in old or got["seconds"] < old["seconds"])):
                    if old and "peak_rss_mb" in old:
                        got["peak_rss_mb"] = max(got["peak_rss_mb"], old["peak_rss_mb"])
                    best[path] = got
        rows += [dict(best[p], size=int(size), model=model_name) for p in paths]
    (workdir / "rows.json").write_text(json.dumps(rows))
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
