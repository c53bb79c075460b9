"""The overhead benchmark's measurement (`python -m bsbench.bench`, which parses its arguments and
starts the DDP ranks before anything here is imported): bsbench's training path against a plain
PyTorch loop and the floor, in rotating rounds, and the input pipelines' rates."""


import contextlib
import json
import logging
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_dir
from torchvision import transforms

from bsbench.core.config import typed
from bsbench.core.order import round_order
from bsbench.job.groups import config_dir
from bsbench.job.build import build
from bsbench.core.stats import paired
from bsbench.training.data import ArrayCIFAR10, TensorImages, device_transform, load_arrays, resized
from bsbench.training.environment import describe
from bsbench.training.timing import synchronize

# What the plain loop autocasts to, by the precision Lightning ran (16-mixed runs as bf16-mixed on a CPU).
SIDES = ("bsbench", "plain", "floor")
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def plain_loop(args, device: torch.device, precision: str, dataset: TensorImages, floor: bool = False) -> float:
    """Global samples/s of a hand-written loop over `args.steps` steps after `args.warmup` steps; with
    `floor`, every step trains on the same batch, prepared on the device once: no input work at all."""
    rank, world_size = world()
    torch.manual_seed(0)
    net = torchvision.models.get_model(args.model, weights=None, num_classes=10).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    net.to(memory_format=memory_format).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, fused=args.fused_adam or None)
    if world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    dtype = AUTOCAST[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    resize = resized(args.image_size, None)
    order = torch.randperm(len(dataset)).tolist()

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = (step * world_size + rank) * args.batch_size % (len(order) - args.batch_size)
        x, y = dataset.__getitems__(order[first : first + args.batch_size])  # the same in-memory data
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return device_transform(x, resize, args.image_size, train=True).contiguous(memory_format=memory_format), y

    fixed = batch(0) if floor else None
    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _settle(device)
            start = time.perf_counter()
        x, y = fixed or batch(step)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    _settle(device)
    return args.steps * args.batch_size * world_size / (time.perf_counter() - start)


def _settle(device: torch.device) -> None:
    """The device idle and, with several ranks, every rank there: where bsbench's clock reads are."""
    synchronize(device)
    if dist.is_initialized():
        dist.barrier()


def bsbench_path(args, workdir: str) -> tuple[float, torch.device, str]:
    """Global samples/s of bsbench's own training path in throughput mode (build() as a run uses it),
    and the device and precision Lightning chose for it, which the plain loop then uses."""
    overrides = [
        "data=synthetic", f"model={args.model}", f"data.image_size={args.image_size}", f"batch_size={args.batch_size}",
        f"precision={args.precision}", f"accelerator={args.accelerator}", f"devices={args.devices}",
        f"strategy={'ddp' if args.devices > 1 else 'auto'}", "mode=throughput",
        f"timing.warmup_steps={args.warmup}", f"trainer.max_steps={args.warmup + args.steps}",
        f"channels_last={args.channels_last}", f"model.fused_adam={args.fused_adam}",
        f"data.num_workers={args.num_workers}", f"data.num_train_images={args.images}",
        f"data.val_size={args.batch_size}", f"trainer.default_root_dir={workdir}", "logger=none",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = typed(compose("config", overrides=overrides))
    built = build(cfg)
    built.trainer.fit(built.model, datamodule=built.datamodule)
    return (built.timing.metrics()["train_samples_per_s"], built.trainer.strategy.root_device,
            str(built.trainer.precision))


def flag_broadcast_ms(device: torch.device, count: int = 200) -> float:
    """Lightning 2.6 broadcasts a SIGTERM flag from rank 0 before every DDP training step and reads it
    back on the host (training_epoch_loop.py, `_broadcast_sigterm_tensor`); no setting turns it off.
    Its cost alone, per step: one small tensor, one broadcast, one `.item()`."""
    for i in range(count + 10):
        if i == 10:
            _settle(device)
            start = time.perf_counter()
        flag = torch.tensor([0], device=device)
        dist.broadcast(flag, src=0)
        flag.item()
    return (time.perf_counter() - start) / count * 1000


def pipeline_rates(args, device: torch.device, data, targets) -> dict:
    """Images/s that each resize path delivers from memory, on one CPU core or the device."""
    resize = resized(args.image_size, None)
    pil = ArrayCIFAR10(data, targets, transforms.Compose([
        transforms.Resize((resize, resize)), transforms.RandomCrop(args.image_size), transforms.ToTensor()]))
    count = min(len(targets), 2000)
    start = time.perf_counter()
    for i in range(count):
        pil[i]
    pil_rate = count / (time.perf_counter() - start)
    tensors = TensorImages(data, targets)
    batches = max(1, 4000 // args.batch_size)
    device_transform(tensors.__getitems__(list(range(args.batch_size)))[0].to(device), resize, args.image_size, True)
    synchronize(device)
    start = time.perf_counter()
    for b in range(batches):
        indices = [(b * args.batch_size + i) % len(targets) for i in range(args.batch_size)]
        x, _ = tensors.__getitems__(indices)
        device_transform(x.to(device, non_blocking=True), resize, args.image_size, True)
    synchronize(device)
    return {"cpu_pil_images_per_s_per_worker": pil_rate,
            "device_images_per_s": batches * args.batch_size / (time.perf_counter() - start)}


def run(args) -> int:
    """Measure, print the figures (rank 0) and write them to args.out."""
    if args.devices > 1:
        cuda = args.accelerator in ("gpu", "cuda") or (args.accelerator == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if cuda else "gloo")  # Lightning finds it initialized and joins it

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner per measurement
    (data, targets), _ = load_arrays("synthetic", None, True, args.images, 1, 42)
    dataset = TensorImages(data, targets)
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as workdir:
        _, device, precision = bsbench_path(args, workdir)  # one-time costs, not measured
        plain_loop(args, device, precision, dataset)
        # rotating order, reversed every other round: a linear drift and a side's gain from following
        # another (measured: about 1% on the CPU VM) fall on every side alike
        for round_ in range(args.rounds):
            for side in round_order(list(SIDES), round_):
                if side == "bsbench":
                    rate = bsbench_path(args, workdir)[0]
                else:
                    rate = plain_loop(args, device, precision, dataset, floor=side == "floor")
                rates[side].append(rate)
    broadcast_ms = flag_broadcast_ms(device) if dist.is_initialized() else None
    rank, world_size = world()
    if dist.is_initialized():  # every rank leaves the group together: a rank exiting with it alive can abort
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return 0
    ours, plain, floor = rates["bsbench"], rates["plain"], rates["floor"]
    ratios = [o / p for o, p in zip(ours, plain)]
    # the geometric mean of the paired ratios, and the t interval of the mean of their logarithms
    versus_plain, versus_floor = paired(ours, plain), paired(ours, floor)
    figures = {
        "config": vars(args) | {"out": str(args.out) if args.out else None},
        "precision_used": precision,
        "world_size": world_size,
        "device": describe(device),
        "plain_samples_per_s": plain,
        "bsbench_samples_per_s": ours,
        "floor_samples_per_s": floor,
        "ratios": ratios,
        "ratio": 1 + versus_plain["ratio"],
        "ratio_ci_low": 1 + versus_plain["ci_low"],
        "ratio_ci_high": 1 + versus_plain["ci_high"],
        "floor_ratio": 1 + versus_floor["ratio"],
        "floor_ratio_ci_low": 1 + versus_floor["ci_low"],
        "floor_ratio_ci_high": 1 + versus_floor["ci_high"],
        "ddp_flag_broadcast_ms": broadcast_ms,
        **pipeline_rates(args, device, data, targets),
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.json").write_text(json.dumps(figures, indent=2, default=str))
    ranks = f" x {world_size} DDP ranks" if world_size > 1 else ""
    print(f"\n{args.model} at {args.image_size} px, batch {args.batch_size}{ranks}, {precision}"
          f"{', fused Adam' if args.fused_adam else ''}, {figures['device']['device_name']}; "
          f"data.num_workers={args.num_workers}; {args.rounds} rounds of {args.steps} steps, the sides in "
          "rotating order:")
    print("| path | samples/s (median) | min | max |\n| --- | --- | --- | --- |")
    for name, side in (("plain PyTorch loop", plain), ("floor: one batch on the device, no input work", floor),
                       ("bsbench (mode=throughput)", ours)):
        print(f"| {name} | {statistics.median(side):.1f} | {min(side):.1f} | {max(side):.1f} |")
    print(f"| bsbench / plain (per round) | {statistics.median(ratios):.3f} | {min(ratios):.3f} | {max(ratios):.3f} |")
    print(f"| input: PIL resize, one worker | {figures['cpu_pil_images_per_s_per_worker']:.0f} images/s | | |")
    print(f"| input: device resize | {figures['device_images_per_s']:.0f} images/s | | |")
    if broadcast_ms is not None:
        print(f"| Lightning's per-step DDP flag broadcast alone | {broadcast_ms:.3f} ms | | |")
    print(f"\nbsbench / plain: {figures['ratio']:.3f} (95% interval {figures['ratio_ci_low']:.3f} to "
          f"{figures['ratio_ci_high']:.3f}; geometric mean of {args.rounds} paired rounds)")
    print(f"bsbench / floor: {figures['floor_ratio']:.3f} (95% interval {figures['floor_ratio_ci_low']:.3f} to "
          f"{figures['floor_ratio_ci_high']:.3f})")
    return 0

