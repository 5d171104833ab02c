"""Time of the cross-validation's per-setting loop (``make eval-audio``), before and after setting-independent work
is done once: the same cached model outputs, the same grid, scored by pyannote's whole ``apply`` + pyannote.metrics
per (setting, recording) (:func:`diarization_eval.reference_scores`, the loop as it was, purity now in both) and by
:func:`diarization_eval.grid_scores` (:class:`diarization_eval.SettingScorer`). Checks that every DER component
and purity of every (setting, recording) is equal, and so the settings chosen per fold (subject to the purity
targets as ``make eval-audio`` is configured: whether each fold met them too), the all-data choice and the held-out
figures; prints both times, their ratio and the load average. Model outputs are computed (and cached under
``--cache``, the eval's cache by default) first when missing, outside the timings.

    .venv/bin/python -m bench.diarization_cv_bench [--threshold 0.3 0.5 0.7] [--recordings 21] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from moshi_data.pipeline.config import REPO_ROOT, load_config  # noqa: E402


def held_out(components, purity, recordings, select_collar: float, purity_targets) -> dict:
    """Settings chosen per fold, the all-data choice and the held-out mean / pooled DER, from the components."""
    import numpy as np

    from moshi_data.pipeline.audio.diarization_eval import choose_settings, purity_constraint, rates

    der = np.array([[rates(row[r][select_collar])["der"] for r in range(len(recordings))] for row in components])
    meets = None if purity_targets is None else purity_constraint(purity, [r.kind == "real" for r in recordings],
                                                                  *purity_targets)
    chosen, all_data, constraint_met = choose_settings(der, [r.fold for r in recordings], meets)
    scored = [components[chosen[r.fold]][index][select_collar] for index, r in enumerate(recordings)]
    pooled = {key: sum(c[key] for c in scored) for key in ("missed", "false_alarm", "confusion", "total")}
    return {"chosen_per_fold": chosen, "all_data_choice": all_data, "purity_constraint_met": constraint_met,
            "mean_der": float(np.mean([rates(c)["der"] for c in scored])), "pooled_der": rates(pooled)["der"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmentation-step", type=float, nargs="+", default=[0.1])
    parser.add_argument("--speech-bias", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--overlap-bias", type=float, nargs="+", default=[0.0])
    parser.add_argument("--fusion-weight", type=float, nargs="+", default=[0.35, 0.65])
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--min-cluster-size", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--min-duration-off", type=float, nargs="+", default=[0.0, 0.2])
    parser.add_argument("--method", nargs="+", default=["centroid", "average", "weighted"])
    parser.add_argument("--recordings", type=int, default=None, help="the first N dev recordings (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the new loop (median reported)")
    parser.add_argument("--cache", default="out/eval-audio/cache")
    parser.add_argument("--output", default="out/bench-diarization-cv/result.json")
    args = parser.parse_args(argv)

    from moshi_data.pipeline.audio import diarization_eval as de
    from moshi_data.pipeline.audio.devset import build_devset
    from moshi_data.pipeline.audio.diarize import Diarizer
    from moshi_data.pipeline.audio.evaluate import SHARED_DATA, min_main_speech_s, selection_purity_targets

    config = load_config("audio_models", ["cpu_threads=1"])
    evaluation = config["evaluation"]
    diarizer = Diarizer(config)
    diarizer.setup()
    recordings = build_devset(SHARED_DATA, evaluation["devset"])[:args.recordings]
    grid = de.parameter_grid({"segmentation_step": args.segmentation_step, "speech_bias": args.speech_bias,
                              "overlap_bias": args.overlap_bias, "fusion_weight": args.fusion_weight,
                              "threshold": args.threshold, "min_cluster_size": args.min_cluster_size,
                              "min_duration_off": args.min_duration_off, "method": args.method})
    collars, select_collar = evaluation["collars"], evaluation["cv"]["select_collar"]
    main_speech_s, purity_targets = min_main_speech_s(), selection_purity_targets(evaluation)
    pipelines = de.model_output_pipelines(diarizer, list(dict.fromkeys(de.model_output_variant(s) for s in grid)))
    dimension = de.fused_dimension(next(iter(pipelines.values())))
    cache = Path(args.cache) if Path(args.cache).is_absolute() else REPO_ROOT / args.cache
    models = de.model_identity(diarizer.settings)
    with de.training_mode(pipelines.values()):
        files = {variant: [de.cached_file(diarizer, pipeline, r, cache, models) for r in recordings]
                 for variant, pipeline in pipelines.items()}
        load_before = os.getloadavg()
        new_times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            new, new_purity = de.grid_scores(diarizer, pipelines, files, recordings, grid, collars, dimension,
                                             main_speech_s, log=lambda _: None)
            new_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        scored = [de.reference_scores(diarizer, pipelines[de.model_output_variant(setting)], setting_files, recordings,
                                      setting, collars, main_speech_s)
                  for setting, setting_files in de.files_per_setting(files, grid, dimension)]
        old, old_purity = [components for components, _ in scored], [purity for _, purity in scored]
        old_time = time.perf_counter() - start
        load_after = os.getloadavg()
    mismatches = [(g, r) for g in range(len(grid)) for r in range(len(recordings))
                  if new[g][r] != old[g][r] or new_purity[g][r] != old_purity[g][r]]
    new_choice = held_out(new, new_purity, recordings, select_collar, purity_targets)
    old_choice = held_out(old, old_purity, recordings, select_collar, purity_targets)
    result = {"settings": len(grid), "recordings": len(recordings),
              "audio_s": round(sum(r.duration for r in recordings), 1),
              "old_loop_s": round(old_time, 2), "new_loop_s_median": round(statistics.median(new_times), 2),
              "new_loop_s_runs": [round(t, 2) for t in new_times],
              "speed_up": round(old_time / statistics.median(new_times), 1),
              "old_ms_per_setting_recording": round(1000 * old_time / len(grid) / len(recordings), 2),
              "new_ms_per_setting_recording": round(1000 * statistics.median(new_times) / len(grid) / len(recordings), 2),
              "unequal_scores": len(mismatches), "same_choices_and_figures": new_choice == old_choice,
              "held_out": new_choice, "load_average_before": load_before, "load_average_after": load_after}
    print(json.dumps(result, indent=1, default=str))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1, default=str))
    return 0 if not mismatches and new_choice == old_choice else 1


if __name__ == "__main__":
    raise SystemExit(main())
