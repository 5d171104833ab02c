"""bench/train_bench.py on the tiny preset (CPU): the written-out FLOP count matches torch's counter."""
from __future__ import annotations

import pytest
import torch

from bench.train_bench import bench_model, bench_text_loader
from moshi_data.trainer.text_data import list_text_files
from moshi_data.trainer.train import resolve_config


@pytest.mark.parametrize("streams", ["dual", "single"])
def test_bench_model_flops_written_out_match_counted(streams):
    config = resolve_config("trainer", "tiny", ["bench.steps=2", "bench.warmup=1", f"model.streams={streams}"])
    threads = torch.get_num_threads()
    try:
        result = bench_model(config, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    for kind in ("audio", "text"):
        written, counted = result[kind]["flops_per_step_written_out"]["total"], result[kind]["flops_per_step_counted"]
        assert written == pytest.approx(counted, rel=0.03), kind  # norms/softmax are left out; attention halved
        assert result[kind]["tokens_per_s"] > 0 and result[kind]["mfu_bf16"] is None  # no peak on CPU
    assert result["audio_samples_consumed_per_s"] == pytest.approx(result["text_sequences_consumed_per_s"])


def test_bench_text_loader(text_corpus, spm_tokenizer):
    config = resolve_config("trainer", "tiny", ["text.source=x", f"text.tokenizer={spm_tokenizer}", "text.num_workers=0"])
    result = bench_text_loader(config, list_text_files(str(text_corpus), "*.parquet"), 8)
    assert result["text_loader_sequences_per_s"] > 0 and result["text_loader_items"] == 8
