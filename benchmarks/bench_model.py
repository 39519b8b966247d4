"""Speed of the detector presets on the CPU: training and inference images per second.

Measures one forward + backward + Adam step (training) and one forward pass
under ``torch.inference_mode`` (inference) on random 200x200 crops with two
clump boxes each, at batch 4, with a fixed number of torch threads. The CPU
may be shared, so each figure is the best of ``--repeats`` timed runs after
one warm-up. Prints a Markdown table: setup, parameters (total / trainable),
train img/s, infer img/s.

Usage::

    python benchmarks/bench_model.py                      # cpu-small candidates
    python benchmarks/bench_model.py --setups cpu-small imagenet-finetuned paper --repeats 2
    python benchmarks/bench_model.py --setups cpu-small --roi-pool both   # sparse vs torchvision RoIAlign
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision.ops import MultiScaleRoIAlign

from clumpcat.detection.model import build_detector

#: Candidate CPU presets compared when choosing ``cpu-small`` (overrides of it).
CANDIDATES: dict[str, tuple[str, dict]] = {
    "cpu-small": ("cpu-small", {}),
    "cpu-narrow [16,32,64]": (
        "cpu-small",
        dict(body_widths=[16, 32, 64], fpn_channels=48, representation_size=128),
    ),
    "cpu-resnet18 [2,2,2]": (
        "cpu-small",
        dict(backbone="resnet18", body_widths=[], body_blocks=[], fpn_channels=128),
    ),
}


def _batch(n: int, size: int, generator: torch.Generator, device: torch.device):
    images = [torch.rand(3, size, size, generator=generator).to(device) for _ in range(n)]
    targets = [
        {
            "boxes": torch.tensor([[40.0, 50.0, 56.0, 66.0], [120.0, 100.0, 140.0, 120.0]], device=device),
            "labels": torch.tensor([1, 2], device=device),
        }
        for _ in range(n)
    ]
    return images, targets


def measure(
    setup: str,
    overrides: dict,
    *,
    batch: int,
    size: int,
    repeats: int,
    device: str = "cpu",
    amp: bool = False,
    roi_pool: str = "sparse",
) -> dict:
    """Time training steps and inference passes of one configuration.

    ``roi_pool="torchvision"`` swaps the detector's :class:`SparseRoIAlign`
    back to torchvision's module (same numbers, torchvision's kernels).
    """
    gen = torch.Generator().manual_seed(0)
    dev = torch.device(device)
    model = build_detector(setup, **overrides).to(dev)
    if roi_pool == "torchvision":
        model.roi_heads.box_roi_pool.__class__ = MultiScaleRoIAlign
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images, targets = _batch(batch, size, gen, dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def train_step():
        with autocast:
            losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()

    def infer_step():
        with torch.inference_mode(), autocast:
            model(images)
        sync()

    out = {"setup": setup if not overrides else "", "params": params, "trainable": trainable}
    for key, step, mode in (("train", train_step, True), ("infer", infer_step, False)):
        model.train(mode)
        step()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - t0)
        out[key] = batch / best
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setups",
        nargs="+",
        default=list(CANDIDATES),
        help="candidate names of CANDIDATES or set-up names of clumpcat.detection.model.SETUPS",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=200, help="side of the square crops in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument(
        "--roi-pool",
        choices=("sparse", "torchvision", "both"),
        default="sparse",
        help="RoIAlign of the box head: clumpcat's sparse product (default), torchvision's, or both",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, threads={args.threads}"
    print(f"{where} batch={args.batch} crop={args.size}x{args.size} amp={args.amp} best of {args.repeats}")
    print("| setup | RoIAlign | params (M) | trainable (M) | train img/s | infer img/s |")
    print("|---|---|---:|---:|---:|---:|")
    pools = ("sparse", "torchvision") if args.roi_pool == "both" else (args.roi_pool,)
    for name in args.setups:
        setup, overrides = CANDIDATES.get(name, (name, {}))
        for pool in pools:
            r = measure(
                setup,
                overrides,
                batch=args.batch,
                size=args.size,
                repeats=args.repeats,
                device=args.device,
                amp=args.amp,
                roi_pool=pool,
            )
            print(
                f"| {name} | {pool} | {r['params'] / 1e6:.2f} | {r['trainable'] / 1e6:.2f} | "
                f"{r['train']:.2f} | {r['infer']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
