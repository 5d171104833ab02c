"""Delays, PAD/EPAD handling and loss weights on hand-built examples (no data needed)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from moshi_data.trainer.data import cut_window, sample_tokens
from moshi_data.trainer.model import RQTransformer, apply_delays, rq_loss, stream_delays, undelay
from moshi_data.trainer.train import lr_factor, resolve_config
from moshi_data.pipeline.audio.shards import Sample
from moshi_data.pipeline.audio.text_frames import place_tokens

PAD, EPAD = 3, 0


def small_model(**overrides) -> tuple[RQTransformer, dict]:
    config = resolve_config("trainer", "tiny", [f"model.{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    return RQTransformer(config["model"]), config


def test_trainer_stream_delays_layout():
    assert stream_delays(8, 1) == [0, 0] + [1] * 7 + [0] + [1] * 7  # moshi: delays [0, 0,1x7, 0,1x7]
    assert stream_delays(8, 2) == [0, 0] + [2] * 7 + [0] + [2] * 7


def test_trainer_delays_on_hand_built_example():
    # 5 streams (text + 2 codebooks x 2 streams), 4 frames; acoustic delay 2.
    tokens = torch.tensor([
        [10, 11, 12, 13],   # text
        [20, 21, 22, 23],   # main semantic
        [30, 31, 32, 33],   # main acoustic
        [40, 41, 42, 43],   # other semantic
        [50, 51, 52, 53],   # other acoustic
    ])
    delays = stream_delays(2, 2)
    assert delays == [0, 0, 2, 0, 2]
    delayed = apply_delays(tokens, delays, [99, 77, 77, 77, 77])
    assert delayed.tolist() == [
        [10, 11, 12, 13],
        [20, 21, 22, 23],
        [77, 77, 30, 31],  # start id fills the delayed slots; 32, 33 fall past the window
        [40, 41, 42, 43],
        [77, 77, 50, 51],
    ]
    assert undelay(delayed, delays).tolist() == [
        [10, 11, 12, 13], [20, 21, 22, 23], [30, 31, -1, -1], [40, 41, 42, 43], [50, 51, -1, -1],
    ]


def test_trainer_text_padding_placement_matches_recipe():
    """The recipe's worked example (helium-moshi-recipe.md 4.1), through the audio job's placement rule."""
    hello, there, how, wond, erful = 101, 102, 103, 104, 105
    words = [([hello], 0.10, 0.45), ([there], 0.50, 0.80), ([how], 1.60, 1.75), ([wond, erful], 1.80, 2.40)]
    stream = place_tokens(words, 38, PAD, EPAD)
    expected = [EPAD, hello, PAD, PAD, PAD, EPAD, there] + [PAD] * 12 + [EPAD, how, EPAD, wond, erful] + [PAD] * 14
    assert stream.tolist() == expected
    # In the trainer, the text stream is stream 0 and stays undelayed whatever the acoustic delay.
    codes = np.arange(16 * 38, dtype=np.int16).reshape(16, 38) % 2048
    sample = Sample("k", np.zeros((2, 38 * 1920), np.float32), [], stream, {}, codes=codes)
    tokens = torch.as_tensor(sample_tokens(sample, 8, 8000, 2048, encode=None))
    model, _ = small_model(acoustic_delay=2)
    delayed = model.delayed(tokens[None])[0]
    assert delayed[0].tolist() == expected
    assert delayed[1].tolist() == codes[0].tolist()  # semantic undelayed
    assert delayed[2, :2].tolist() == [2048, 2048] and delayed[2, 2:].tolist() == codes[1, :-2].tolist()


def test_trainer_window_pads_with_no_token():
    tokens = np.arange(17 * 5).reshape(17, 5)
    window = cut_window(tokens, 8, np.random.default_rng(0))
    assert (window[:, :5] == tokens).all() and (window[:, 5:] == -1).all()
    long = np.arange(17 * 40).reshape(17, 40)
    starts = {int(cut_window(long, 8, np.random.default_rng(seed))[0, 0]) for seed in range(20)}
    assert len(starts) > 3 and all(0 <= s <= 32 for s in starts)
    assert cut_window(long, 8, None)[0, 0] == 0


def test_trainer_loss_weights_as_moshi_finetune():
    """PAD/EPAD text targets weigh 0.5, the semantic codebook 100, -1 and delayed slots nothing."""
    model, config = small_model()
    torch.manual_seed(1)
    text = torch.tensor([[PAD, EPAD, 200, 201, PAD, -1]])
    codes = torch.randint(0, 2048, (1, 16, 6))
    codes[:, :, 5] = -1
    tokens = torch.cat([text[:, None], codes], dim=1)
    text_logits, audio_logits, delayed = model(tokens)
    loss, metrics = rq_loss(text_logits, audio_logits, delayed, model, config["loss"], PAD, EPAD)

    text_ce = F.cross_entropy(text_logits[0, :5], text[0, :5], reduction="none")
    weights = torch.tensor([0.5, 0.5, 1.0, 1.0, 0.5])
    expected_text = (text_ce * weights).sum() / weights.sum()
    audio_ce, audio_w = [], []
    for k in range(8):  # main stream only; delay 1 on acoustic codebooks
        first, end = (0, 5) if k == 0 else (1, 6)  # frame 5 of an acoustic codebook holds frame 4's code
        target = delayed[0, 1 + k, first:end]
        audio_ce.append(F.cross_entropy(audio_logits[0, k, first:end], target, reduction="none"))
        audio_w.append(torch.full_like(audio_ce[-1], 100.0 if k == 0 else 1.0))
    audio_ce, audio_w = torch.cat(audio_ce), torch.cat(audio_w)
    expected_audio = (audio_ce * audio_w).sum() / audio_w.sum()
    assert torch.allclose(loss, expected_text + expected_audio, rtol=1e-5)
    assert torch.allclose(metrics["loss_text"], text_ce.mean(), rtol=1e-5)
    assert set(metrics) == {"loss_text", "loss_text_words", "loss_semantic", "loss_acoustic"}


def test_trainer_model_is_causal_over_frames():
    model, _ = small_model(predict_other=True)
    model.eval()
    torch.manual_seed(2)
    tokens = torch.cat([torch.randint(4, 100, (1, 1, 12)), torch.randint(0, 2048, (1, 16, 12))], dim=1)
    changed = tokens.clone()
    changed[:, :, 8:] = torch.randint(0, 100, (1, 17, 4))
    with torch.no_grad():
        a_text, a_audio, _ = model(tokens)
        b_text, b_audio, _ = model(changed)
    # frame t's predictions may use inputs up to t-1 and same-frame tokens of earlier depth steps
    assert torch.allclose(a_text[:, :9], b_text[:, :9], atol=1e-5)
    assert not torch.allclose(a_text[:, 9:], b_text[:, 9:])
    assert torch.allclose(a_audio[:, :, :8], b_audio[:, :, :8], atol=1e-5)
    assert a_audio.shape == (1, 16, 12, 2048)


def test_trainer_lr_schedule_warmup_then_cosine():
    factors = [lr_factor(step, 10, 100, 0.1) for step in range(100)]
    assert factors[0] == 0.1 and factors[9] == 1.0
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert abs(factors[-1] - 0.1) < 0.01
