"""Resuming with another number of processes (torchrun ranks): stream positions are re-mapped through
:class:`trainer.data.StreamOrigin`, so no text document (checked by row id) or audio sample is repeated
or skipped."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from moshi_data.trainer.data import StreamOrigin
from moshi_data.trainer.text_data import (ParquetDocuments, TextSettings, TextStream, document_addresses,
                                          list_text_files, unit_hash)
from moshi_data.trainer.train import main as train_main
from moshi_data.trainer.train import read_jsonl, resolve_config
from trainer_helpers import text_args

REPO = Path(__file__).resolve().parents[2]


def write_corpus(folder: Path, documents: int = 60) -> Path:
    """Two Parquet files of documents of varied lengths (``doc_id`` d0, d1, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [" ".join(f"w{i}x{j}" for j in range(2 + (i * 7) % 13)) for i in range(documents)]
    half = documents // 2
    for part, rows in enumerate((range(half), range(half, documents))):
        pq.write_table(pa.table({"doc_id": [f"d{i}" for i in rows], "text": [texts[i] for i in rows]}),
                       folder / f"part-{part}.parquet")
    return folder


def first_epoch(files: list[str], config: dict) -> dict[int, tuple[str, int]]:
    """Address number -> (doc_id, tokens incl. EOS) over the first epoch, in the stream's own order."""
    import sentencepiece

    settings = TextSettings.from_config(config["text"])
    documents = ParquetDocuments(files, settings)
    tokenizer = sentencepiece.SentencePieceProcessor(model_file=config["text"]["tokenizer"])
    result = {}
    for _, index, row, number in document_addresses(documents, int(config["seed"]), settings.shuffle_files,
                                                    settings.shuffle_buffer, 1, 0, 1):
        raw, doc_id, _ = documents.row(index, row)
        result[number] = (doc_id, len(tokenizer.encode(raw.decode())) + 1)
    return result


def consumed(origin: StreamOrigin, epoch: dict[int, tuple[str, int]], eval_fraction: float):
    """Training doc ids consumed before ``origin`` (whole or in part) and the tokens they gave."""
    partial = dict(origin.partial)
    whole = set(range(origin.next)) | set(origin.done)
    assert max(whole | set(partial)) < len(epoch)  # the test stays inside the first epoch
    training = {n for n, (doc_id, _) in epoch.items() if unit_hash("eval", doc_id) >= eval_fraction}
    ids = sorted(epoch[n][0] for n in (whole | set(partial)) & training)
    tokens = sum(epoch[n][1] for n in whole & training) + sum(used for n, used in partial.items() if n in training)
    return ids, tokens


def test_text_stream_resumes_on_other_rank_counts(tmp_path, spm_tokenizer):
    """1 rank -> 2 ranks -> 1 rank -> 3 ranks: every document used once (by row id), every token once."""
    files = list_text_files(str(write_corpus(tmp_path / "corpus")), "*.parquet")
    config = resolve_config("trainer", "tiny", ["text.source=x", "text.ratio=0.5", f"text.tokenizer={spm_tokenizer}",
                                                "text.shuffle_buffer=8", "text.eval_fraction=0.1"])
    origin, used, tokens = StreamOrigin(), [], 0
    for world_size, sequences in ((1, 7), (2, 5), (1, 6), (3, 3)):
        positions = []
        for rank in range(world_size):
            stream = iter(TextStream(files, config, 16, rank=rank, world_size=world_size, origin=origin))
            items = [next(stream) for _ in range(sequences)]
            tokens += sum(int((item["tokens"] >= 0).sum()) for item in items)
            used += [e["address"] for item in items for e in item["events"] if e["reason"] == "used"]
            positions.append(tuple(items[-1]["position"]))
        origin = origin.after(positions)
    epoch = first_epoch(files, config)
    assert len(used) == len(set(used))  # no document repeated
    ids, expected_tokens = consumed(origin, epoch, 0.1)
    assert sorted(epoch[n][0] for n in used) == ids  # none skipped: the used rows are the consumed ones
    assert tokens == expected_tokens  # documents cut by a checkpoint go on where they stopped
    assert len(ids) > 10 and origin.partial  # several documents, and a cut one is carried over


def torchrun(args: list[str], processes: int) -> None:
    """The trainer under torchrun on CPU (gloo), ``processes`` ranks; fails the test on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "trainer")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={processes}", "-m", "moshi_data.trainer.train", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_trainer_resumes_on_other_process_counts(tmp_path, trainer_shards, spm_tokenizer):
    """A run of 1 process, resumed by 2 (torchrun, gloo), then by 1: no crash, steps in order, every
    text document used once (by row id) and as many audio samples consumed as the steps took."""
    corpus = write_corpus(tmp_path / "corpus" / "documents").parent
    output = tmp_path / "run"
    common = ["--shards", str(trainer_shards), "--output", str(output), "--preset", "tiny",
              *text_args(corpus, spm_tokenizer), "--set", "text.num_workers=0", "--set", "train.eval_every=0",
              "--set", "train.checkpoint_every=100", "--set", "text.eval_fraction=0.1", "--steps", "12"]
    train_main([*common, "--stop-at", "4"])
    torchrun([*common, "--stop-at", "8"], processes=2)
    train_main(common)
    log = read_jsonl(output / "log.jsonl")
    assert [line["step"] for line in log] == list(range(1, 13))
    state = torch.load(output / "checkpoints" / "step_00000012.pt", weights_only=False)
    assert len(state["data_positions"]) == 1
    config = resolve_config("trainer", "tiny", ["text.source=x", "text.ratio=0.5", f"text.tokenizer={spm_tokenizer}",
                                                "text.eval_fraction=0.1"])
    epoch = first_epoch(list_text_files(str(corpus), "*.parquet"), config)
    text_origin = StreamOrigin.from_state(state["text_origin"]).after([tuple(p) for p in state["text_positions"]])
    ids, _ = consumed(text_origin, epoch, 0.1)
    assert sum(counts.get("used", 0) for counts in state["text_counts"]) == len(ids) > 0
    audio_origin = StreamOrigin.from_state(state["data_origin"]).after([(p, 0) for p in state["data_positions"]])
    ranks = [1] * 4 + [2] * 4 + [1] * 4  # processes per step
    batch = int(resolve_config("trainer", "tiny", [])["train"]["batch_size"])
    audio_steps = sum(r * batch for line, r in zip(log, ranks) if line["batch"] == "audio")
    assert audio_origin.next + len(audio_origin.done) == audio_steps > 0
    assert {line["batch"] for line in log[4:8]} == {"audio", "text"}
