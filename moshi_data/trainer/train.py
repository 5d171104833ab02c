"""Train the small Moshi-style RQ-Transformer on audio WebDataset shards, mixed with text-only batches.

    python -m moshi_data.trainer.train --shards out/audio-shards/shards --output out/train --steps 1000 --preset tiny
    python -m moshi_data.trainer.train --shards ... --output ... --text out/text-corpus --text-ratio 0.5
    torchrun --nproc-per-node 8 -m moshi_data.trainer.train --shards s3://bucket/shards --output out/train --preset 100m

Each step is a text-only batch with probability ``text.ratio`` (drawn from ``(seed, step)``), else
an audio batch; the two kinds have their own AdamW state (Moshi: "a separate optimizer state").
Writes ``OUTPUT/log.jsonl`` (one object per step, ``batch``: audio | text), ``OUTPUT/eval.jsonl``,
``OUTPUT/rejects.jsonl`` (every rejected record or text document with its reason),
``OUTPUT/config.yaml`` (the resolved config), ``OUTPUT/checkpoints/step_XXXXXXXX.pt`` and
``OUTPUT/report.json``. Running again with the same OUTPUT resumes exactly from the latest
checkpoint (model, both optimizers, RNG, audio and text stream positions); with another number of
processes the stream positions are re-mapped (no sample or document repeated or skipped).
s3 paths use Beam's S3 options (``--s3_endpoint_url``, ``--s3_region_name``, credentials).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from collections import Counter
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
import yaml

from moshi_data.pipeline.config import REPO_ROOT, ConfigError, apply_overrides, deep_merge, load_config
from moshi_data.trainer.data import S3_OPTIONS, Batches, LoaderBatches, ShardStream, StreamOrigin, list_shards, split_eval
from moshi_data.trainer.model import RQTransformer, count_parameters, rq_loss, text_loss
from moshi_data.trainer.text_data import ParquetDocuments, TextBatches, TextSettings, TextStream, list_text_files

LOG = logging.getLogger("trainer")
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = "step_{:08d}.pt"
REJECTS_FILES = "rejects*.jsonl"


# ------------------------------------------------------------------------------------ config
def resolve_config(config: str, preset: Optional[str], overrides: list[str]) -> dict[str, Any]:
    """Load the YAML config, merge the presets (``tiny`` or ``tiny,pretrain``) over it in order, then
    apply ``a.b=value`` overrides (checked against the config: a typo is an error, not a new key)."""
    loaded = load_config(config, defaults="trainer")
    presets = loaded.pop("presets", {})
    for name in (preset or "").split(","):
        if not name:
            continue
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(presets))}")
        loaded = deep_merge(loaded, presets[name])
    loaded["preset"] = preset
    resolved = apply_overrides(loaded, overrides)
    text = resolved["text"]
    if not 0.0 <= float(text["ratio"]) <= 1.0:
        raise ConfigError(f"text.ratio must be in [0, 1], got {text['ratio']}")
    if float(text["ratio"]) > 0 and not text["source"]:
        raise ConfigError("text.ratio > 0 needs text batches: pass --text (or text.source)")
    if text["source"] and not text["tokenizer"]:  # the audio text stream's SentencePiece model
        text["tokenizer"] = load_config(text["tokenizer_config"])["text"]["tokenizer"]
    if text["tokenizer"] and not Path(text["tokenizer"]).is_absolute():
        text["tokenizer"] = str(REPO_ROOT / text["tokenizer"])
    return resolved


# Settings a resumed run may change: they do not change what is computed.
RUNTIME_KEYS = {"train": ("steps", "cpu_threads", "compile"), "data": ("num_workers", "prefetch_factor"),
                "text": ("num_workers",)}


def check_same_run(output: Path, config: dict[str, Any]) -> None:
    """Resuming needs the run's config, except for :data:`RUNTIME_KEYS`."""
    path = output / "config.yaml"
    if not path.exists():
        return
    saved = yaml.safe_load(path.read_text())

    def without_runtime(c: dict[str, Any]) -> dict[str, Any]:
        return {**c, **{section: {k: v for k, v in c[section].items() if k not in keys}
                        for section, keys in RUNTIME_KEYS.items()}}

    if without_runtime(saved) != without_runtime(config):
        raise SystemExit(f"{path} holds a different config; use a new --output or the same config to resume")


# -------------------------------------------------------------------------------- utilities
def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All objects of a JSONL file (``[]`` when it does not exist)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def truncate_jsonl(path: Path, keep: callable) -> int:
    """Keep the lines of ``path`` for which ``keep(object, line_number)`` is true; returns lines kept."""
    if not path.exists():
        return 0
    lines = [line for i, line in enumerate(path.read_text().splitlines()) if line and keep(json.loads(line), i)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, optim: Mapping[str, Any], device: torch.device,
                   only: Optional[list[torch.nn.Parameter]] = None) -> torch.optim.Optimizer:
    """AdamW over ``model``'s parameters (or the subset ``only``); weight decay on weight matrices
    only (not norms or embeddings). ``optim.fused``: auto = fused kernels on CUDA."""
    chosen = None if only is None else {id(p) for p in only}
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if chosen is None or id(param) in chosen:
            (decay if param.ndim >= 2 and "embeddings" not in name else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": float(optim["weight_decay"])}, {"params": no_decay, "weight_decay": 0.0}]
    fused = optim["fused"]
    if fused == "auto":
        fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=float(optim["lr"]), betas=tuple(optim["betas"]), eps=float(optim["eps"]),
                                  fused=bool(fused))
    for group in optimizer.param_groups:
        group["initial_lr"] = float(optim["lr"])
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to ``initial_lr * factor``; returns the lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]


def batch_kind(seed: int, step: int, ratio: float) -> str:
    """``text`` with probability ``ratio`` for step ``step`` (same on every rank, after a resume too)."""
    if ratio <= 0:
        return "audio"
    return "text" if np.random.default_rng([seed, step, 0x7E47]).random() < ratio else "audio"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(output: Path) -> Optional[Path]:
    paths = sorted((output / CHECKPOINT_DIR).glob("step_*.pt"))
    return paths[-1] if paths else None


def rejects_name(rank: int, world_size: int) -> str:
    """The rejects file of ``rank``: ``rejects.jsonl`` in a single-process run."""
    return "rejects.jsonl" if world_size == 1 else f"rejects-rank{rank}.jsonl"


def save_checkpoint(output: Path, state: dict[str, Any], keep: int) -> Path:
    directory = output / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FORMAT.format(state["step"])
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in sorted(directory.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


class Distributed:
    """torchrun environment (world size 1 without it)."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world_size > 1:
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, value: Any) -> list[Any]:
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(values, value)
        return values

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce the gradients of ``params`` (text batches do not go through DDP)."""
        if self.world_size > 1:
            for param in params:
                if param.grad is not None:
                    torch.distributed.all_reduce(param.grad)
                    param.grad /= self.world_size

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor)
            tensor /= self.world_size
        return tensor

    def close(self) -> None:
        if self.world_size > 1:
            torch.distributed.destroy_process_group()


def pick_device(train: Mapping[str, Any], dist: Distributed) -> torch.device:
    wanted = train["device"]
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda":
        torch.cuda.set_device(dist.local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
        return torch.device("cuda", dist.local_rank)
    return torch.device(wanted)


def autocast(device: torch.device, bf16: bool):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# ------------------------------------------------------------------------------------ train
class HeldOutBatches:
    """The first ``limit`` batches of a held-out stream, read at the first eval and kept for the
    later ones: an eval reads no file again, and every eval of a run (resumed or not) sees the same
    batches. Bounded: ``train.eval_batches`` x ``train.batch_size`` windows (a few MB at 100m).

    ``open_batches(on_reject)`` opens the batch iterator; ``rejected`` keeps what it rejected.
    """

    def __init__(self, open_batches: Callable[[Callable[[dict], None]], LoaderBatches], limit: int):
        self.open_batches = open_batches
        self.limit = limit
        self.rejected: list[dict] = []
        self._batches: Optional[list[torch.Tensor]] = None

    def __iter__(self):
        if self._batches is None:
            batches = self.open_batches(self.rejected.append)
            try:
                self._batches = list(islice(batches, self.limit))
            finally:
                batches.close()
        return iter(self._batches)


def held_out_audio(shards: list[str], config: Mapping[str, Any], s3: Mapping[str, Any]) -> HeldOutBatches:
    """The held-out shards' first ``train.eval_batches`` batches (ordered; the same on every rank)."""
    def open_batches(on_reject):
        return Batches(ShardStream(shards, config, train=False, s3=s3), int(config["train"]["batch_size"]), 0, 1,
                       int(config["data"]["max_consecutive_rejects"]), on_reject, drop_last=False)

    return HeldOutBatches(open_batches, int(config["train"]["eval_batches"]))


def held_out_text(files: list[str], config: Mapping[str, Any], s3: Mapping[str, Any]) -> HeldOutBatches:
    """The first ``train.eval_batches`` batches of the held-out documents (ordered; the same on every rank)."""
    def open_batches(_):
        dataset = TextStream(files, config, frames_per_window(config), train=False, s3=s3)
        return TextBatches(dataset, int(config["train"]["batch_size"]), 0, 1, lambda event: None, drop_last=False)

    return HeldOutBatches(open_batches, int(config["train"]["eval_batches"]))


def evaluate(model, raw_model, held_out: HeldOutBatches, config, device, dist) -> dict[str, Any]:
    """Mean loss over the held-out audio batches. Every rank evaluates the same batches, so the
    collective means line up."""
    totals: dict[str, float] = {}
    count = 0
    model.eval()
    with torch.no_grad():
        for tokens in held_out:
            with autocast(device, bool(config["train"]["bf16"])):
                text_logits, audio_logits, delayed = model(tokens.to(device))
            loss, metrics = rq_loss(text_logits, audio_logits, delayed, raw_model, config["loss"],
                                    int(config["model"]["text_pad_id"]), int(config["model"]["text_epad_id"]))
            for name, value in {"loss": loss.detach(), **metrics}.items():
                totals[name] = totals.get(name, 0.0) + float(dist.mean(value.float()))
            count += 1
    model.train()
    result = {f"eval_{name}": value / max(count, 1) for name, value in totals.items()}
    result.update(eval_batches=count,
                  eval_rejected=[{"key": r["key"], "url": r["url"], "reason": r["reason"]} for r in held_out.rejected])
    return result


def evaluate_text(text_model, raw_model, held_out: HeldOutBatches, config, device, dist) -> dict[str, Any]:
    """Mean text loss over the held-out text batches."""
    total, count = 0.0, 0
    raw_model.eval()
    with torch.no_grad():
        for text in held_out:
            with autocast(device, bool(config["train"]["bf16"])):
                logits = text_model(text.to(device))
            loss, _ = text_loss(logits, text.to(device), raw_model.text_vocab)
            total += float(dist.mean(loss.detach().float()))
            count += 1
    raw_model.train()
    if count == 0:
        LOG.warning("no held-out text document (text.eval_fraction=%s): no text eval", config["text"]["eval_fraction"])
        return {}
    return {"eval_text_loss": total / count, "eval_text_batches": count}


def frames_per_window(config: Mapping[str, Any]) -> int:
    """Frames of a training window = the temporal context = the length of a packed text sequence."""
    return int(round(float(config["data"]["window_seconds"]) * float(config["data"]["frame_rate"])))


def check_tokenizer(config: Mapping[str, Any]) -> None:
    """The text tokenizer exists and its ids fit ``model.text_vocab_size``."""
    import sentencepiece

    path = Path(config["text"]["tokenizer"])
    if not path.exists():
        raise FileNotFoundError(f"text tokenizer {path} missing: run `make tokenizer` or set text.tokenizer")
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(path)).get_piece_size()
    if pieces > int(config["model"]["text_vocab_size"]):
        raise ValueError(f"text tokenizer {path} has {pieces} pieces > model.text_vocab_size "
                         f"{config['model']['text_vocab_size']}")


def check_same_tokenizer(shard: str, tokenizer: str, s3: Optional[Mapping[str, Any]] = None) -> None:
    """Text batches and the audio text stream must share one SentencePiece model: the first record's
    ``meta.json`` ``model_versions.tokenizer`` (``name sha256:<digest>``, written by the audio job)
    must name the text tokenizer's digest. Shards without it (e.g. reference shards) are not checked."""
    from moshi_data.pipeline.audio.recording import file_digest
    from moshi_data.trainer.data import shard_records

    record = next((record for _, record, _ in shard_records(shard, s3) if record is not None), None)
    if record is None or "meta.json" not in record:
        return
    stored = json.loads(record["meta.json"]).get("model_versions", {}).get("tokenizer", "")
    if "sha256:" in stored and stored.split("sha256:", 1)[1].strip() != file_digest(Path(tokenizer)):
        raise ValueError(f"text tokenizer {tokenizer} is not the one of the audio shards' text stream "
                         f"({stored!r} in {shard}): set text.tokenizer to that model")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's config from the command line (--config, --preset, --set, --text, --text-ratio)."""
    overrides = list(args.set)
    if args.text is not None:
        overrides.append(f"text.source={args.text}")
    if args.text_ratio is not None:
        overrides.append(f"text.ratio={args.text_ratio}")
    return resolve_config(args.config, args.preset, overrides)


def s3_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Beam S3 options given on the command line (``--s3_endpoint_url``, ...)."""
    return {name: getattr(args, name) for name in S3_OPTIONS if getattr(args, name, None) not in (None, False)}


def remap_positions(state: Mapping[str, Any], path: Path, world_size: int) -> dict[str, Any]:
    """A checkpoint written by another number of ranks, for ``world_size`` ranks: the stream origins
    its ranks' positions amount to, positions from 0 there, the text counts of the old ranks summed
    onto ``old rank % world_size``."""
    saved = len(state["data_positions"])
    if "data_origin" not in state:
        raise SystemExit(f"{path} was written by {saved} rank(s) before stream origins were saved; "
                         f"resume with {saved} rank(s)")
    text_counts = [Counter() for _ in range(world_size)]
    for rank, counts in enumerate(state["text_counts"]):
        text_counts[rank % world_size].update(counts)
    return {
        "data_origin": StreamOrigin.from_state(state["data_origin"]).after(
            [(p, 0) for p in state["data_positions"]]).to_state(),
        "text_origin": StreamOrigin.from_state(state["text_origin"]).after(
            [tuple(p) for p in state["text_positions"]]).to_state(),
        "data_positions": [0] * world_size, "text_positions": [[0, 0]] * world_size,
        "text_counts": [dict(c) for c in text_counts],
    }


def train(args: argparse.Namespace) -> dict[str, Any]:
    config = config_from_args(args)
    s3 = s3_options(args)
    if args.steps is not None:
        config["train"]["steps"] = args.steps
    steps = int(config["train"]["steps"])
    stop_at = min(steps, args.stop_at) if args.stop_at else steps
    output = Path(args.output)
    dist = Distributed()
    text_cfg = config["text"]
    text_ratio = float(text_cfg["ratio"]) if text_cfg["source"] else 0.0
    text_files = list_text_files(str(text_cfg["source"]), text_cfg["pattern"], s3) if text_ratio > 0 else []
    if text_files:
        check_tokenizer(config)
        ParquetDocuments(text_files[:1], TextSettings.from_config(text_cfg), s3).rows(0)  # fail fast: schema
    if dist.main:
        output.mkdir(parents=True, exist_ok=True)
        check_same_run(output, config)
        atomic_write_text(output / "config.yaml", yaml.safe_dump(config, sort_keys=True))
    train_cfg, optim_cfg, model_cfg = config["train"], config["optim"], config["model"]
    if train_cfg.get("cpu_threads"):
        torch.set_num_threads(int(train_cfg["cpu_threads"]))
    device = pick_device(train_cfg, dist)

    seed = int(config["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    raw_model = RQTransformer(model_cfg).to(device)
    params = count_parameters(raw_model)
    text_params = raw_model.text_parameters()
    optimizer = make_optimizer(raw_model, optim_cfg, device)
    text_optimizer = make_optimizer(raw_model, optim_cfg, device, only=text_params) if text_files else None
    schedule_steps = int(optim_cfg["schedule_steps"] or steps)

    def lr_at(step: int) -> float:
        return lr_factor(step, int(optim_cfg["warmup_steps"]), schedule_steps, float(optim_cfg["min_lr_ratio"]))

    start_step, positions, rejects_written = 0, [0] * dist.world_size, {}
    text_positions = [[0, 0]] * dist.world_size
    data_origin = text_origin = StreamOrigin()
    text_counts: Counter = Counter()
    checkpoint_path = latest_checkpoint(output)
    if checkpoint_path is not None:
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        saved_ranks = len(state["data_positions"])
        if saved_ranks != dist.world_size:
            state = {**state, **remap_positions(state, checkpoint_path, dist.world_size)}
            LOG.info("%s was written by %d rank(s): stream positions re-mapped to %d", checkpoint_path, saved_ranks,
                     dist.world_size)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if text_optimizer is not None:
            text_optimizer.load_state_dict(state["text_optimizer"])
        set_rng_state(state["rng"][dist.rank % saved_ranks])
        start_step, positions, text_positions = state["step"], state["data_positions"], state["text_positions"]
        data_origin = StreamOrigin.from_state(state.get("data_origin"))
        text_origin = StreamOrigin.from_state(state.get("text_origin"))
        text_counts = Counter(state["text_counts"][dist.rank])
        rejects_written = state["rejects_written"]
        if isinstance(rejects_written, list):  # per rank (checkpoints written before per-file counts)
            rejects_written = {rejects_name(r, saved_ranks): n for r, n in enumerate(rejects_written)}
        LOG.info("resuming from %s (step %d, data position %s, text position %s)", checkpoint_path, start_step,
                 positions, text_positions)
    if start_step >= stop_at:
        LOG.info("%s is already at step %d (asked for %d): nothing to do", output, start_step, stop_at)
        dist.close()
        report_path = output / "report.json"
        if report_path.exists():
            return json.loads(report_path.read_text())
        return {"step": start_step, "finished": start_step >= steps, "rejected_total": None, "wall_s": 0.0}
    if dist.main:  # drop log lines written after the checkpoint (a killed run)
        truncate_jsonl(output / "log.jsonl", lambda line, _: line["step"] <= start_step)
        truncate_jsonl(output / "eval.jsonl", lambda line, _: line["step"] <= start_step)
    # each rank's rejects file back to its checkpointed length; files of ranks a re-mapped run no
    # longer has (rank 0 sees to them) too
    rejects_names = [rejects_name(rank, dist.world_size) for rank in range(dist.world_size)]
    rejects_path = output / rejects_names[dist.rank]
    rejects_count = truncate_jsonl(rejects_path, lambda _, index: index < rejects_written.get(rejects_path.name, 0))
    earlier_rejects = {name: n for name, n in rejects_written.items() if name not in rejects_names}
    if dist.main:
        for path in sorted(output.glob(REJECTS_FILES)):
            if path.name not in rejects_names:
                truncate_jsonl(path, lambda _, index, n=earlier_rejects.get(path.name, 0): index < n)

    model = raw_model
    text_model = raw_model.text_forward
    if train_cfg["compile"]:
        model = torch.compile(raw_model)
        text_model = torch.compile(raw_model.text_forward)
    if dist.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist.local_rank] if device.type == "cuda" else None)

    shards = list_shards(args.shards, config["data"]["shard_pattern"], s3)
    train_shards, eval_shards = split_eval(shards, int(config["data"]["eval_shards"]))
    if args.eval_shards:
        train_shards, eval_shards = shards, list_shards(args.eval_shards, config["data"]["shard_pattern"], s3)
    if text_files:
        check_same_tokenizer(train_shards[0], text_cfg["tokenizer"], s3)
    held_out = held_out_audio(eval_shards, config, s3) if eval_shards else None
    held_out_texts = held_out_text(text_files, config, s3) if text_files else None
    rejects_file = open(rejects_path, "a", encoding="utf-8")

    def write_reject(line: dict) -> None:
        nonlocal rejects_count
        rejects_file.write(json.dumps(line, ensure_ascii=False) + "\n")
        rejects_file.flush()
        rejects_count += 1

    def on_reject(item: dict) -> None:
        LOG.warning("skipping bad record %s in %s: %s", item["key"], item["url"], item["reason"])
        write_reject({"kind": "audio", "index": item["index"], "key": item["key"], "url": item["url"],
                      "reason": item["reason"]})

    def on_text_event(event: dict) -> None:
        text_counts[event["reason"]] += 1
        if "url" in event:  # bad input (empty file or text, invalid UTF-8): named in rejects.jsonl
            LOG.warning("skipping text %s row %s: %s", event["url"], event.get("row"), event["reason"])
            write_reject({"kind": "text", **event})

    dataset = ShardStream(train_shards, config, train=True, start=positions[dist.rank], rank=dist.rank,
                          world_size=dist.world_size, origin=data_origin, s3=s3)
    batches = Batches(dataset, int(train_cfg["batch_size"]), int(config["data"]["num_workers"]),
                      int(config["data"]["prefetch_factor"]), int(config["data"]["max_consecutive_rejects"]), on_reject)
    text_batches = None
    if text_files:
        text_stream = TextStream(text_files, config, frames_per_window(config), train=True,
                                 position=tuple(text_positions[dist.rank]), rank=dist.rank, world_size=dist.world_size,
                                 origin=text_origin, s3=s3)
        text_batches = TextBatches(text_stream, int(train_cfg["batch_size"]), int(text_cfg["num_workers"]),
                                   int(config["data"]["prefetch_factor"]), on_text_event)
    if dist.main:
        LOG.info("model %s parameters (%s without embeddings), streams=%s; %d train / %d eval shards; device %s",
                 f"{params['total']:,}", f"{params['non_embedding']:,}", model_cfg["streams"], len(train_shards),
                 len(eval_shards), device)
        LOG.info("codes: codes.npy when the shard has it, else Mimi on the fly (codec.weights=%s)",
                 config["codec"]["weights"])
        if text_files:
            LOG.info("text-only batches with probability %.2f from %d Parquet file(s) of %s (tokenizer %s)",
                     text_ratio, len(text_files), text_cfg["source"], text_cfg["tokenizer"])

    from tqdm import tqdm

    progress = tqdm(total=steps, initial=start_step, desc="train", unit="step", disable=not dist.main)
    log_file = open(output / "log.jsonl", "a", encoding="utf-8") if dist.main else None
    eval_file = open(output / "eval.jsonl", "a", encoding="utf-8") if dist.main else None
    streams = raw_model.num_streams
    last: dict[str, Any] = {}
    last_eval: dict[str, Any] = {}
    started = time.perf_counter()
    step = start_step
    pad_id, epad_id = int(model_cfg["text_pad_id"]), int(model_cfg["text_epad_id"])
    bf16 = bool(train_cfg["bf16"])
    while step < stop_at:
        tick = time.perf_counter()
        kind = batch_kind(seed, step, text_ratio)
        factor = lr_at(step)
        raw_model.zero_grad(set_to_none=True)
        if kind == "text":
            text = next(text_batches).to(device, non_blocking=True)
            data_wait = time.perf_counter() - tick
            with autocast(device, bf16):
                logits = text_model(text)
            loss, metrics = text_loss(logits, text, raw_model.text_vocab)
            loss.backward()
            dist.average_gradients(text_params)
            grad_norm = torch.nn.utils.clip_grad_norm_(text_params, float(optim_cfg["grad_clip"]))
            lr = set_lr(text_optimizer, factor)
            text_optimizer.step()
            tokens_in_batch = text.shape[0] * text.shape[1]
            frames = tokens_in_batch * dist.world_size
            token_streams = 1
        else:
            tokens = next(batches).to(device, non_blocking=True)
            data_wait = time.perf_counter() - tick
            with autocast(device, bf16):
                text_logits, audio_logits, delayed = model(tokens)
            loss, metrics = rq_loss(text_logits, audio_logits, delayed, raw_model, config["loss"], pad_id, epad_id)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), float(optim_cfg["grad_clip"]))
            lr = set_lr(optimizer, factor)
            optimizer.step()
            frames = tokens.shape[0] * tokens.shape[2] * dist.world_size
            token_streams = streams
        step += 1
        values = torch.stack([loss.detach().float(), grad_norm.float(), *[v.float() for v in metrics.values()]])
        values = dist.mean(values).tolist()
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_time = time.perf_counter() - tick
        last = {
            "step": step, "batch": kind, "loss": values[0], **dict(zip(metrics, values[2:])), "grad_norm": values[1],
            "lr": lr, "tokens_per_s": frames * token_streams / step_time, "frames_per_s": frames / step_time,
            "step_time_s": step_time, "data_wait_s": data_wait,
            "samples": batches.kept * dist.world_size, "rejected": rejects_count, "data_position": batches.position,
        }
        if text_batches is not None:
            last.update(text_position=text_batches.position, text_documents=text_counts["used"],
                        text_skipped={k: v for k, v in sorted(text_counts.items()) if k != "used"})
        if dist.main:
            log_file.write(json.dumps(last) + "\n")
            log_file.flush()
            progress.update(1)
            progress.set_postfix(batch=kind, loss=f"{values[0]:.3f}", tok_s=f"{last['tokens_per_s']:.0f}")
        eval_every = int(train_cfg["eval_every"])
        if eval_every and (step % eval_every == 0 or step == steps) and (eval_shards or text_files):
            last_eval = {"step": step}
            if held_out is not None:
                last_eval.update(evaluate(model, raw_model, held_out, config, device, dist))
            if held_out_texts is not None:
                last_eval.update(evaluate_text(text_model, raw_model, held_out_texts, config, device, dist))
            if dist.main:
                eval_file.write(json.dumps(last_eval) + "\n")
                eval_file.flush()
        if step % int(train_cfg["checkpoint_every"]) == 0 or step == stop_at:
            positions = dist.gather(batches.position)
            text_positions = dist.gather(text_batches.position if text_batches is not None else [0, 0])
            counts = dist.gather(dict(text_counts))
            rng = dist.gather(rng_state())
            written = dict(zip(rejects_names, dist.gather(rejects_count)))
            if dist.main:
                save_checkpoint(output, {
                    "step": step, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                    "text_optimizer": text_optimizer.state_dict() if text_optimizer is not None else None,
                    "rng": rng, "data_positions": positions, "text_positions": text_positions,
                    "data_origin": data_origin.to_state(), "text_origin": text_origin.to_state(),
                    "text_counts": counts, "rejects_written": {**earlier_rejects, **written}, "config": config,
                }, int(train_cfg["keep_checkpoints"]))
    progress.close()
    batches.close()
    if text_batches is not None:
        text_batches.close()
    rejects_file.close()
    rejected_total = sum(earlier_rejects.values()) + sum(dist.gather(rejects_count))
    report = {
        "step": step, "steps": steps, "finished": step >= steps, "resumed_from": start_step,
        "parameters": params, "device": str(device), "world_size": dist.world_size, "streams": model_cfg["streams"],
        "train_shards": len(train_shards), "eval_shards": len(eval_shards), "text_files": len(text_files),
        "text_ratio": text_ratio, "text_documents": dict(sorted(text_counts.items())),
        "samples_this_run": batches.kept * dist.world_size, "rejected_total": rejected_total,
        "wall_s": time.perf_counter() - started, "last": last, "last_eval": last_eval,
    }
    if dist.main:
        log_file.close()
        eval_file.close()
        atomic_write_text(output / "report.json", json.dumps(report, indent=2, sort_keys=True))
    dist.close()
    return report


def main(argv: Optional[list[str]] = None) -> int:
    from moshi_data.pipeline.command import command_parser, run_command

    parser = command_parser(__name__, __doc__, config="trainer",
                            resolve=config_from_args)
    parser.add_argument("--shards", required=True, help="folder, glob or s3://bucket/prefix of shard-*.tar")
    parser.add_argument("--output", required=True, help="run folder (logs, checkpoints); reused = resume")
    parser.add_argument("--steps", type=int, default=None, help="total optimizer steps (default: train.steps)")
    parser.add_argument("--preset", default=None, help="model/training preset from the config: tiny | 100m")
    parser.add_argument("--text", default=None, help="text-only batches: text-corpus output folder, Parquet glob or s3:// prefix")
    parser.add_argument("--text-ratio", type=float, default=None, help="probability of a text-only batch (text.ratio)")
    parser.add_argument("--eval-shards", default=None, help="held-out shards (default: last data.eval_shards shards)")
    parser.add_argument("--stop-at", type=int, default=None, help="stop (with a checkpoint) after this step")
    storage = parser.add_argument_group("object storage (Beam's S3 options, as the Beam jobs take them; "
                                        "unset: boto3's environment, e.g. AWS_ENDPOINT_URL_S3)")
    for name in S3_OPTIONS:
        if name == "s3_disable_ssl":
            storage.add_argument(f"--{name}", action="store_true", help="do not use SSL with s3")
        else:
            storage.add_argument(f"--{name}", default=None, metavar=name.removeprefix("s3_").upper())
    return run_command(parser, argv, _main)


def _main(args: argparse.Namespace) -> None:
    threads = torch.get_num_threads()
    try:
        report = train(args)  # bad input or config: one line and a non-zero exit (pipeline/command.py)
    finally:  # train.cpu_threads must not leak into a caller's process (tests, notebooks)
        torch.set_num_threads(threads)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: report[k] for k in ("step", "finished", "rejected_total", "wall_s")}))


if __name__ == "__main__":
    raise SystemExit(main())
