"""``train``: SAR rasters and their footprint layers in, a UNet11 checkpoint out."""
from __future__ import annotations

from dataclasses import asdict

from . import CliError, finish
from ..defaults import MODEL_OUTPUTS
from .input_arguments import add_input_arguments, input_options

LOOKS = ("north", "south", "east", "west")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune the footprint model (TernausNet UNet11)",
        description="Train on SAR rasters with building footprints (dice + 10 x focal loss, AdamW). The "
                    "bottom rows of each raster are held out; after every epoch the extraction runs there and "
                    "is scored with the SpaceNet F1; the best epoch is kept. Give --raster/--labels in pairs.")
    p.add_argument("--raster", action="append", required=True, metavar="TIF",
                   help="SAR raster (repeat for several), read as extract reads it: bands by their descriptions "
                        "or --band-order, values converted to the model's scale, resampled to its pixel size")
    p.add_argument("--labels", action="append", required=True, metavar="VECTOR",
                   help="footprints of the raster given at the same position (any OGR format, any CRS)")
    p.add_argument("--output", required=True, help="checkpoint to write (.pt); <output>.resume.pt is kept beside it")
    p.add_argument("--width", type=float, default=0.25,
                   help="channel multiplier, 1 = SN6 baseline (default 0.25, the bundled model)")
    p.add_argument("--init", help="checkpoint to fine-tune ('bundled' for the plugin's model; default: random init)")
    p.add_argument("--epochs", type=int, default=10, help="total epochs (default 10)")
    p.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: one pass over the training area)")
    p.add_argument("--tile-size", type=int, default=256, help="training crop in px, multiple of 32 (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="constant, or cosine decay to 0 over all epochs (default constant)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--val-share", type=float, default=0.2,
                   help="bottom share of each raster's rows kept for validation, 0 to below 1 (default 0.2; 0: none)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--resume", action="store_true", help="continue from <output>.resume.pt")
    p.add_argument("--resume-file", metavar="FILE",
                   help="where the resume state is written after every epoch and read by --resume "
                        "(default: <output>.resume.pt beside the output)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--normalisation", default="auto", choices=("auto", "sn6", "per-band"),
                   help="auto: the initial model's, else SN6's 127.5/31.875; per-band: from the training data")
    p.add_argument("--look-direction", choices=LOOKS,
                   help="the model's look direction (default: the initial model's, else north)")
    p.add_argument("--raster-look", action="append", choices=LOOKS,
                   help="look direction of each raster, in --raster order (default: its LOOK_DIRECTION tag, else "
                        "the product's pass and look side, else the model's); its crops are turned by quarter "
                        "turns to the model's look")
    add_input_arguments(p, look_direction=False)
    p.add_argument("--pixel-size", type=float, metavar="M",
                   help="the model's pixel size in metres; every raster is resampled to it (default: the initial "
                        "model's, else the first raster's ground pixel size)")
    p.add_argument("--min-area", type=float, default=20.0,
                   help="footprints of this area in m² or less stay out of the masks (default 20)")
    p.add_argument("--label-erosion", type=float, metavar="M",
                   help="shrink every footprint in the masks by M metres; extraction grows blobs back by as much "
                        "(default: the initial model's, else 1; 0 learns whole footprints)")
    p.add_argument("--contact-weight", type=float, default=0.0, metavar="W",
                   help="extra loss weight of the gap between touching buildings and its edges: such a pixel "
                        "counts 1 + W times (default 0: off; the bundled model: 0; 5 was tried, see its model card)")
    p.add_argument("--outputs", choices=tuple(MODEL_OUTPUTS),
                   help="footprint: one footprint channel (as the SN6 baseline); instances: body, edge and "
                        "contact channels, so extraction splits touching buildings with a marker-based watershed "
                        "(an --init one-channel model keeps its footprint channel and gains the other two). "
                        "Default: the --init model's outputs, else footprint")
    p.add_argument("--no-mixed-precision", action="store_true",
                   help="train in float32 (default: bf16/fp16 autocast on CUDA, bf16 on CPUs with AMX or AVX512-BF16)")
    p.add_argument("--no-augment", action="store_true", help="no flips along the look direction")
    p.add_argument("--cache-mb", type=float, default=1024.0,
                   help="training regions up to this size are held in RAM, else read window by window (default 1024)")
    p.add_argument("--description", help="what the training data is, for the checkpoint's metadata")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..core.training import TrainingOptions, train_model
    from ..core.validation import validate_training

    if len(args.raster) != len(args.labels):
        raise CliError(f"{len(args.raster)} --raster but {len(args.labels)} --labels; give them in pairs")
    if args.raster_look and len(args.raster_look) != len(args.raster):
        raise CliError(f"{len(args.raster_look)} --raster-look for {len(args.raster)} --raster; give one per raster")
    options = TrainingOptions(
        width=args.width, initial_model=args.init, tile_size_px=args.tile_size, batch_size=args.batch_size,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, learning_rate=args.lr, lr_schedule=args.lr_schedule,
        weight_decay=args.weight_decay, validation_share=args.val_share, device=args.device, resume=args.resume,
        resume_file=args.resume_file,
        seed=args.seed, normalisation=args.normalisation, look_direction=args.look_direction,
        raster_look_directions=tuple(args.raster_look) if args.raster_look else None,
        label_min_area_m2=args.min_area, label_erosion_m=args.label_erosion,
        contact_weight=args.contact_weight, augment=not args.no_augment,
        outputs=MODEL_OUTPUTS[args.outputs] if args.outputs else None,
        mixed_precision=not args.no_mixed_precision, cache_limit_mb=args.cache_mb,
        description=args.description, input=input_options(args, look_direction=False),
        pixel_size_m=args.pixel_size)
    resume_file = args.resume_file or f"{args.output}.resume.pt"
    validate_training(args.raster, args.labels, args.output, options, resume_file=resume_file)
    result = train_model(args.raster, args.labels, args.output, options, args.feedback)
    summary = {"output": str(result.output_path), "best_epoch": result.best_epoch, "best_f1": result.best_f1,
               "epochs": result.epochs, "seconds": round(result.seconds, 3),
               "history": [asdict(record) for record in result.history]}
    f1 = "n/a" if result.best_f1 is None else f"{result.best_f1:.4f}"
    return finish(args, summary, f"best epoch {result.best_epoch} (validation F1 {f1}) -> {result.output_path} "
                                 f"({result.seconds:.0f} s, {result.epochs} epoch(s))")
