"""Trainer benchmark: step time, tokens/s, peak memory, MFU (GPU), and whether the loaders keep up.

    python -m bench.train_bench [--preset tiny|100m] [--output out/bench-train] [--shards DIR] [--text DIR|GLOB]

- Model: ``bench.steps`` timed optimizer steps (after ``bench.warmup``) of each batch kind on random
  tokens of the preset's window and batch size: audio steps (``[B, streams, T]``, tokens/s = frames/s
  x streams) and text-only steps (``[B, T]``, own AdamW over the text parameters). FLOPs per step
  are written out by :meth:`RQTransformer.step_flops` (matmul multiply-accumulates x 2, backward =
  2 x forward) and also counted by ``torch.utils.flop_counter``; MFU = written-out FLOPs/s over the
  device's bf16 dense peak (``bench.peak_flops``). CUDA: bf16 autocast, ``train.compile`` and
  ``optim.fused`` as configured, peak memory from ``torch.cuda.max_memory_allocated``.
- Mixed training at ``bench.text_ratio`` consumes ``(1 - ratio) x B`` audio samples and ``ratio x B``
  text sequences per mean step; each loader's rate is compared with that (target ratio >= 5).
  Audio: the training stream (``data.num_workers`` workers) over ``--shards`` (default: small shards
  built from ``../shared/data/diarization``, cached in OUTPUT). Text: the text stream over ``--text``
  (default: ``../shared/data/reference_text`` written as one Parquet file in OUTPUT) with the
  configured tokenizer (if it is missing, a small one is trained into OUTPUT and named in the result).
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
from moshi_data.trainer.model import RQTransformer, count_parameters, rq_loss, text_loss
from moshi_data.trainer.text_data import TextStream, list_text_files
from moshi_data.trainer.train import autocast, frames_per_window, make_optimizer, resolve_config

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(step, warmup: int, steps: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step().item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def bench_model(config: dict, device: torch.device) -> dict:
    """Time audio and text-only optimizer steps on random tokens; FLOPs written out and counted."""
    from torch.utils.flop_counter import FlopCounterMode

    model_cfg, train_cfg, bench = config["model"], config["train"], config["bench"]
    torch.manual_seed(0)
    raw = RQTransformer(model_cfg).to(device)
    compile_model = bool(train_cfg["compile"]) and device.type == "cuda"
    model = torch.compile(raw) if compile_model else raw
    text_model = torch.compile(raw.text_forward) if compile_model else raw.text_forward
    optimizer = make_optimizer(raw, config["optim"], device)
    text_params = raw.text_parameters()
    text_optimizer = make_optimizer(raw, config["optim"], device, only=text_params)
    batch, frames = int(train_cfg["batch_size"]), frames_per_window(config)
    text = torch.randint(4, int(model_cfg["text_vocab_size"]), (batch, frames), device=device)
    audio = torch.randint(0, int(model_cfg["audio_codebook_size"]), (batch, raw.num_streams - 1, frames), device=device)
    tokens = torch.cat([text[:, None], audio], dim=1)
    bf16, clip = bool(train_cfg["bf16"]), float(config["optim"]["grad_clip"])
    pad_id, epad_id = int(model_cfg["text_pad_id"]), int(model_cfg["text_epad_id"])

    def audio_loss(net):
        with autocast(device, bf16):
            text_logits, audio_logits, delayed = net(tokens)
        return rq_loss(text_logits, audio_logits, delayed, raw, config["loss"], pad_id, epad_id)[0]

    def text_only_loss(forward):
        with autocast(device, bf16):
            logits = forward(text)
        return text_loss(logits, text, raw.text_vocab)[0]

    def audio_step():
        raw.zero_grad(set_to_none=True)
        loss = audio_loss(model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), clip)
        optimizer.step()
        return loss

    def text_step():
        raw.zero_grad(set_to_none=True)
        loss = text_only_loss(text_model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(text_params, clip)
        text_optimizer.step()
        return loss

    counted = {}
    for kind, loss_of in (("audio", lambda: audio_loss(raw)), ("text", lambda: text_only_loss(raw.text_forward))):
        with FlopCounterMode(display=False) as counter:  # eager, one forward + backward
            loss_of().backward()
        counted[kind] = counter.get_total_flops()
        raw.zero_grad(set_to_none=True)
    written = {"audio": raw.step_flops(batch, frames), "text": raw.step_flops(batch, frames, text_only=True)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup, steps = int(bench["warmup"]), int(bench["steps"])
    times = {"audio": _timed(audio_step, warmup, steps, device), "text": _timed(text_step, warmup, steps, device)}
    ratio = float(bench["text_ratio"])
    step_time = {kind: float(np.median(values)) for kind, values in times.items()}
    mean_step = (1 - ratio) * step_time["audio"] + ratio * step_time["text"]
    result = {
        "parameters": count_parameters(raw), "batch_size": batch, "frames": frames, "streams": raw.num_streams,
        "stream_mode": model_cfg["streams"], "compile": compile_model, "fused_adamw": optimizer.defaults["fused"],
        "bf16": bf16 and device.type == "cuda", "timed_steps": steps, "text_ratio": ratio,
        "mixed_step_time_s": mean_step,
        "audio_samples_consumed_per_s": (1 - ratio) * batch / mean_step,
        "text_sequences_consumed_per_s": ratio * batch / mean_step,
    }
    peak = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((float(v) for k, v in bench["peak_flops"].items() if k.lower() in name.lower()), None)
        result.update(device_name=name, peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, peak_flops=peak)
    else:
        result.update(device_name="cpu", threads=torch.get_num_threads(), peak_rss_mb=peak_rss_mb())
    for kind in ("audio", "text"):
        median = step_time[kind]
        tokens_per_step = batch * frames * (raw.num_streams if kind == "audio" else 1)
        flops = written[kind]["total"]
        result[kind] = {
            "step_time_s_median": median, "step_time_s_min": min(times[kind]), "step_time_s_max": max(times[kind]),
            "tokens_per_s": tokens_per_step / median, "frames_per_s": batch * frames / median,
            "flops_per_step_written_out": written[kind], "flops_per_step_counted": counted[kind],
            "achieved_flops_per_s": flops / median, "mfu_bf16": flops / median / peak if peak else None,
        }
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


def bench_text_loader(config: dict, files: list[str], items: int) -> dict:
    """Packed text sequences/s of the text stream (``text.num_workers`` workers: 0 or 1)."""
    from torch.utils.data import DataLoader

    workers = int(config["text"]["num_workers"])
    dataset = TextStream(files, config, frames_per_window(config), train=True)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                        prefetch_factor=int(config["data"]["prefetch_factor"]) if workers else None)
    iterator = iter(loader)
    next(iterator)  # worker start-up and tokenizer load are not throughput
    start = time.perf_counter()
    for _ in range(items):
        next(iterator)
    elapsed = time.perf_counter() - start
    return {"text_loader_workers": workers, "text_loader_items": items, "text_loader_sequences_per_s": items / elapsed}


def reference_text(output: Path) -> list[str]:
    """``../shared/data/reference_text`` (one document per file) as one Parquet file, cached under OUTPUT."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = output / "text" / "documents" / "part-000000.parquet"
    if not path.exists():
        base = REPO.parent / "shared" / "data" / "reference_text"
        if not base.is_dir():
            raise SystemExit(f"{base} missing: pass --text")
        sources = sorted(p for p in base.rglob("*") if p.is_file() and p.name != "SOURCES.txt")
        texts = [p.read_bytes().decode("utf-8", errors="replace") for p in sources]
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"doc_id": [str(p.relative_to(base)) for p in sources], "text": texts}), path)
    return [str(path)]


def ensure_tokenizer(config: dict, output: Path) -> str:
    """The configured text tokenizer, or a small one trained into OUTPUT when it is missing."""
    if Path(config["text"]["tokenizer"]).exists():
        return config["text"]["tokenizer"]
    from moshi_data.classifiers.tokenizer import train_tokenizer
    from moshi_data.pipeline.config import load_config

    prefix = output / "tokenizer" / "spm"
    if not Path(f"{prefix}.model").exists():
        prefix.parent.mkdir(parents=True, exist_ok=True)
        train_tokenizer(load_config(config["text"]["tokenizer_config"], [
            f"tokenizer.output={prefix}", "tokenizer.vocab_size=2000", "tokenizer.input_sentence_size=60000"]))
    return f"{prefix}.model"


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
    parser.add_argument("--preset", default=None, help="tiny | 100m[,pretrain] (default: 100m on CUDA, tiny on CPU)")
    parser.add_argument("--output", default="out/bench-train")
    parser.add_argument("--config", default="trainer")
    parser.add_argument("--shards", default=None, help="shards for the audio loader benchmark (default: built)")
    parser.add_argument("--text", default=None, help="text corpus for the text loader benchmark (default: built)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--skip-loader", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("100m" if device.type == "cuda" else "tiny")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    config = resolve_config(args.config, preset, ["text.source=bench", *args.set])
    if config["train"].get("cpu_threads") and device.type == "cpu":
        torch.set_num_threads(int(config["train"]["cpu_threads"]))
    command = "python -m bench.train_bench " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"preset": preset, "device": str(device), "torch": torch.__version__, "command": command}
    result.update(bench_model(config, device))
    if not args.skip_loader:
        shards = list_shards(args.shards, config["data"]["shard_pattern"]) if args.shards else reference_shards(output, config)
        result.update(bench_loader(config, shards, int(config["bench"]["loader_items"])))
        target = float(config["bench"]["loader_target_ratio"])
        result["loader_vs_trainer"] = result["loader_samples_per_s"] / result["audio_samples_consumed_per_s"]
        config["text"]["tokenizer"] = result["text_tokenizer"] = ensure_tokenizer(config, output)
        files = list_text_files(args.text, config["text"]["pattern"]) if args.text else reference_text(output)
        result.update(bench_text_loader(config, files, int(config["bench"]["text_loader_items"])))
        result["text_loader_vs_trainer"] = result["text_loader_sequences_per_s"] / result["text_sequences_consumed_per_s"]
        result["loader_keeps_up"] = result["loader_vs_trainer"] >= target
        result["text_loader_keeps_up"] = result["text_loader_vs_trainer"] >= target
    (output / "train_bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
