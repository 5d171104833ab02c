"""Trainer benchmark: step time, tokens/s, peak memory, MFU (GPU), and whether the loader keeps up.

    python -m bench.train_bench [--preset tiny|100m] [--output out/bench-train] [--shards DIR]

- Model: ``bench.steps`` timed optimizer steps (after ``bench.warmup``) of the preset on random
  tokens of the preset's window and batch size; tokens/s = frames/s x 17 streams. FLOPs per step
  are counted with ``torch.utils.flop_counter`` (forward + backward matmuls/attention), MFU =
  FLOPs/s over the device's bf16 dense peak (``bench.peak_flops``). On CUDA it runs bf16 autocast.
- Loader: samples/s of the training data stream (shards with ``codes.npy``, ``data.num_workers``
  workers), compared with the samples/s the timed trainer step consumes (target ratio >= 5).
  Without ``--shards`` it builds small shards from ``../shared/data/diarization`` (cached in OUTPUT).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from moshi_data.trainer.data import ShardStream, list_shards
from moshi_data.trainer.model import RQTransformer, count_parameters, rq_loss
from moshi_data.trainer.train import autocast, make_optimizer, resolve_config

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(config: dict, device: torch.device) -> dict:
    """Time optimizer steps on random tokens; count FLOPs of one step."""
    from torch.utils.flop_counter import FlopCounterMode

    model_cfg, train_cfg, bench = config["model"], config["train"], config["bench"]
    torch.manual_seed(0)
    raw = RQTransformer(model_cfg).to(device)
    model = torch.compile(raw) if train_cfg["compile"] and device.type == "cuda" else raw
    optimizer = make_optimizer(raw, config["optim"], device)
    batch = int(train_cfg["batch_size"])
    frames = int(round(float(config["data"]["window_seconds"]) * float(config["data"]["frame_rate"])))
    text = torch.randint(4, int(model_cfg["text_vocab_size"]), (batch, 1, frames))
    audio = torch.randint(0, int(model_cfg["audio_codebook_size"]), (batch, raw.num_streams - 1, frames))
    tokens = torch.cat([text, audio], dim=1).to(device)
    bf16 = bool(train_cfg["bf16"])

    def step():
        with autocast(device, bf16):
            text_logits, audio_logits, delayed = model(tokens)
        loss, _ = rq_loss(text_logits, audio_logits, delayed, raw, config["loss"],
                          int(model_cfg["text_pad_id"]), int(model_cfg["text_epad_id"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), float(config["optim"]["grad_clip"]))
        optimizer.step()
        return loss

    with FlopCounterMode(display=False) as counter:  # eager, one step
        with autocast(device, bf16):
            text_logits, audio_logits, delayed = raw(tokens)
        loss, _ = rq_loss(text_logits, audio_logits, delayed, raw, config["loss"],
                          int(model_cfg["text_pad_id"]), int(model_cfg["text_epad_id"]))
        loss.backward()
    flops = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    for _ in range(int(bench["warmup"])):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(int(bench["steps"])):
        start = time.perf_counter()
        step().item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_time = float(np.median(times))
    result = {
        "parameters": count_parameters(raw), "batch_size": batch, "frames": frames, "streams": raw.num_streams,
        "step_time_s_median": step_time, "step_time_s_min": min(times), "step_time_s_max": max(times),
        "tokens_per_s": batch * frames * raw.num_streams / step_time, "frames_per_s": batch * frames / step_time,
        "samples_per_s": batch / step_time, "flops_per_step": flops, "achieved_flops_per_s": flops / step_time,
        "timed_steps": len(times),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((float(v) for k, v in bench["peak_flops"].items() if k.lower() in name.lower()), None)
        result.update(device_name=name, peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9,
                      peak_flops=peak, mfu=flops / step_time / peak if peak else None)
    else:
        result.update(device_name="cpu", threads=torch.get_num_threads(), peak_rss_mb=peak_rss_mb())
    return result


def bench_loader(config: dict, shards: list[str], items: int) -> dict:
    """Samples/s of the training stream (decode + window, ``data.num_workers`` workers)."""
    from torch.utils.data import DataLoader

    workers = int(config["data"]["num_workers"])
    dataset = ShardStream(shards, config, train=True)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                        prefetch_factor=int(config["data"]["prefetch_factor"]) if workers else None)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    rejected = sum(next(iterator)["tokens"] is None for _ in range(items))
    elapsed = time.perf_counter() - start
    return {"loader_workers": workers, "loader_items": items, "loader_rejected": rejected,
            "loader_samples_per_s": items / elapsed}


def reference_shards(output: Path, config: dict) -> list[str]:
    """Shards built from ../shared/data/diarization (first 30 s of 4 clips), cached under OUTPUT."""
    from moshi_data.pipeline.audio.codec import shared_codec
    from moshi_data.trainer.reference_shards import build_reference_shards

    directory = output / "shards"
    if not list(directory.glob("shard-*.tar")):
        base = REPO.parent / "shared" / "data" / "diarization"
        if not base.is_dir():
            raise SystemExit(f"{base} missing: pass --shards")
        ami = base / "pyannote_ami_debug"
        clips = [(base / "pyannote_sample/sample.wav", base / "pyannote_sample/sample.rttm", "sample")] + [
            (ami / f"trn0{i}.wav", ami / "debug.train.rttm", f"trn0{i}") for i in (1, 2, 3)
        ]
        build_reference_shards(clips, directory, shared_codec(config["codec"]), segment_seconds=10.0, max_seconds=30.0)
    return list_shards(str(directory), config["data"]["shard_pattern"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="tiny | 100m (default: 100m on CUDA, tiny on CPU)")
    parser.add_argument("--output", default="out/bench-train")
    parser.add_argument("--config", default="trainer")
    parser.add_argument("--shards", default=None, help="shards for the loader benchmark (default: built)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--skip-loader", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("100m" if device.type == "cuda" else "tiny")
    config = resolve_config(args.config, preset, args.set)
    if config["train"].get("cpu_threads") and device.type == "cpu":
        torch.set_num_threads(int(config["train"]["cpu_threads"]))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.train_bench " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"preset": preset, "device": str(device), "torch": torch.__version__, "command": command}
    result.update(bench_model(config, device))
    if not args.skip_loader:
        shards = list_shards(args.shards, config["data"]["shard_pattern"]) if args.shards else reference_shards(output, config)
        result.update(bench_loader(config, shards, int(config["bench"]["loader_items"])))
        result["loader_vs_trainer"] = result["loader_samples_per_s"] / result["samples_per_s"]
        result["loader_keeps_up"] = result["loader_vs_trainer"] >= float(config["bench"]["loader_target_ratio"])
    (output / "train_bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
