"""A small Moshi RQ-Transformer: temporal transformer over frames + depth transformer per frame.

Streams per frame (``model.streams: dual``, ``[B, 17, T]``): 0 = main speaker's text, 1-8 = main's
Mimi codebooks (1 semantic + 7 acoustic), 9-16 = the other stream's codebooks. ``streams: single``
(Moshi's pre-training): ``[B, 9, T]``, 0 = every speaker's text, 1-8 = the codebooks of the mix. Special ids: text ids are in
``[0, text_vocab_size)``, audio ids in ``[0, audio_codebook_size)``; ``-1`` = no token (no input,
no loss); the "start" id (``text_vocab_size`` / ``audio_codebook_size``) fills delayed slots and
the first input frame, as in Moshi.

- Delays: semantic codebooks and text undelayed, acoustic codebooks delayed by ``acoustic_delay``.
- Temporal transformer (causal, RoPE): input at frame t = sum of the 17 embeddings of frame t-1.
- Text head on the temporal output predicts the text token of frame t; the depth transformer then
  predicts main's codebooks (and the other stream's if ``predict_other``) one after another, each
  step fed the temporal output (per-step projection) plus the previous token (text for step 0).
- Text-only batches (Helium text, :meth:`RQTransformer.text_forward`): the temporal transformer and
  text head on the text stream alone; every audio stream is absent, i.e. zero-embedded as Moshi's
  zero token (-1), and the depth transformer is not run.
- Loss as moshi-finetune: weighted text CE (PAD/EPAD x ``text_padding_weight``) + weighted audio CE
  (first codebook x ``first_codebook_weight``), each a weighted mean over valid targets.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

TEXT_STREAM = 0
NO_TOKEN = -1


STREAM_MODES = {"single": 1, "dual": 2}  # audio streams per mode


def audio_streams(mode: str) -> int:
    """Number of audio streams of ``model.streams`` (``single``: the mix; ``dual``: main, other)."""
    if mode not in STREAM_MODES:
        raise ValueError(f"model.streams must be one of {sorted(STREAM_MODES)}, got {mode!r}")
    return STREAM_MODES[mode]


def stream_delays(num_codebooks: int, acoustic_delay: int, audio: int = 2) -> list[int]:
    """Delay per stream: text 0, then per audio stream semantic 0 and acoustic ``acoustic_delay``."""
    per_stream = [0] + [acoustic_delay] * (num_codebooks - 1)
    return [0] + per_stream * audio


def apply_delays(tokens: torch.Tensor, delays: list[int], start_ids: list[int]) -> torch.Tensor:
    """Shift stream ``s`` of ``tokens [..., S, T]`` right by ``delays[s]``, filling with ``start_ids[s]``.

    Tokens pushed past the end of the window are dropped (Moshi trains on delayed windows the same way).
    """
    delayed = tokens.clone()
    for stream, delay in enumerate(delays):
        if delay == 0:
            continue
        delayed[..., stream, delay:] = tokens[..., stream, :-delay]
        delayed[..., stream, :delay] = start_ids[stream]
    return delayed


def undelay(tokens: torch.Tensor, delays: list[int]) -> torch.Tensor:
    """Inverse of :func:`apply_delays` (the last ``delay`` frames of each stream become ``-1``)."""
    out = tokens.clone()
    for stream, delay in enumerate(delays):
        if delay == 0:
            continue
        out[..., stream, :-delay] = tokens[..., stream, delay:]
        out[..., stream, -delay:] = NO_TOKEN
    return out


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotary(x: torch.Tensor, max_period: float) -> torch.Tensor:
    """Apply rotary position embeddings to ``x [B, H, T, D]`` (positions 0..T-1)."""
    half = x.shape[-1] // 2
    freqs = max_period ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)[:, None] * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class Block(nn.Module):
    """Pre-norm causal self-attention (SDPA) + gated SiLU MLP."""

    def __init__(self, dim: int, heads: int, hidden: int, eps: float, dropout: float, rope_max_period: float | None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.rope_max_period = rope_max_period
        self.dropout = dropout
        self.attn_norm = RMSNorm(dim, eps)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.mlp_norm = RMSNorm(dim, eps)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if self.rope_max_period:
            q, k = rotary(q, self.rope_max_period), rotary(k, self.rope_max_period)
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, dim))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + F.dropout(self.down(F.silu(gate) * up), self.dropout, self.training)


def _hidden(dim: int, scale: float) -> int:
    return max(64, int(round(dim * scale / 64)) * 64)


class Transformer(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, hidden: int, eps: float, dropout: float, rope_max_period):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, eps, dropout, rope_max_period) for _ in range(layers))
        self.norm = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class MultiEmbedding(nn.Module):
    """One embedding table per stream; ``-1`` embeds to zero."""

    def __init__(self, vocab_sizes: list[int], dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(size, dim) for size in vocab_sizes)

    def forward(self, tokens: torch.Tensor, stream: int) -> torch.Tensor:
        valid = tokens >= 0
        return self.tables[stream](tokens.clamp(min=0)) * valid.unsqueeze(-1)


class RQTransformer(nn.Module):
    """Moshi-style RQ-Transformer over ``[B, 17, T]`` undelayed stream tokens."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        self.text_vocab = int(config["text_vocab_size"])
        self.card = int(config["audio_codebook_size"])
        self.num_codebooks = int(config["num_codebooks"])
        self.audio_streams = audio_streams(str(config["streams"]))
        if config["predict_other"] and self.audio_streams == 1:
            raise ValueError("model.predict_other needs model.streams: dual (single has no other stream)")
        self.num_streams = 1 + self.audio_streams * self.num_codebooks
        self.dep_q = self.num_codebooks * (2 if config["predict_other"] else 1)
        self.delays = stream_delays(self.num_codebooks, int(config["acoustic_delay"]), self.audio_streams)
        self.start_ids = [self.text_vocab] + [self.card] * (self.audio_streams * self.num_codebooks)
        dim, dep_dim = int(config["dim"]), int(config["depformer_dim"])
        eps, dropout = float(config["norm_eps"]), float(config["dropout"])

        self.embeddings = MultiEmbedding([self.text_vocab + 1] + [self.card + 1] * (self.num_streams - 1), dim)
        self.temporal = Transformer(
            dim, int(config["num_layers"]), int(config["num_heads"]), _hidden(dim, float(config["hidden_scale"])),
            eps, dropout, float(config["rope_max_period"]),
        )
        self.text_head = nn.Linear(dim, self.text_vocab, bias=False)
        # Depth transformer: per-step input projections and output heads ("weights per step").
        self.dep_in = nn.Parameter(torch.randn(self.dep_q, dim, dep_dim) * dim**-0.5)
        self.dep_embeddings = MultiEmbedding([self.text_vocab + 1] + [self.card + 1] * (self.dep_q - 1), dep_dim)
        self.depformer = Transformer(
            dep_dim, int(config["depformer_num_layers"]), int(config["depformer_num_heads"]),
            _hidden(dep_dim, float(config["depformer_hidden_scale"])), eps, dropout, None,
        )
        self.dep_heads = nn.Parameter(torch.empty(self.dep_q, dep_dim, self.card))
        self.apply(self._init_weights)
        nn.init.normal_(self.text_head.weight, std=0.02)  # near-uniform first predictions
        nn.init.normal_(self.dep_heads, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)

    def delayed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Delayed streams ``[B, 17, T]`` (targets and depth inputs live on this time axis)."""
        return apply_delays(tokens, self.delays, self.start_ids)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced logits for undelayed ``tokens [B, 17, T]``.

        Returns ``(text_logits [B, T, V], audio_logits [B, dep_q, T, card], delayed [B, 17, T])``.
        """
        batch, streams, length = tokens.shape
        if streams != self.num_streams:
            raise ValueError(f"expected {self.num_streams} streams, got {streams}")
        delayed = self.delayed(tokens)
        start = torch.tensor(self.start_ids, device=tokens.device, dtype=tokens.dtype)
        inputs = torch.cat([start.expand(batch, -1)[..., None], delayed[..., :-1]], dim=-1)
        x = sum(self.embeddings(inputs[:, stream], stream) for stream in range(streams))
        hidden = self.temporal(x)  # [B, T, dim]
        text_logits = self.text_head(hidden)

        # Depth step k sees the frame's temporal output and the previous token of the same frame.
        previous = delayed[:, : self.dep_q]  # text, then the predicted codebooks but the last
        dep_x = torch.einsum("btd,kde->btke", hidden, self.dep_in.to(hidden.dtype))
        dep_x = dep_x + torch.stack([self.dep_embeddings(previous[:, k], k) for k in range(self.dep_q)], dim=2)
        dep_out = self.depformer(dep_x.reshape(batch * length, self.dep_q, -1))
        audio_logits = torch.einsum("nke,kec->nkc", dep_out, self.dep_heads.to(dep_out.dtype))
        audio_logits = audio_logits.view(batch, length, self.dep_q, self.card).transpose(1, 2)
        return text_logits, audio_logits, delayed

    def text_forward(self, text: torch.Tensor) -> torch.Tensor:
        """Text logits ``[B, T, V]`` of a text-only batch ``text [B, T]`` (next-token prediction).

        Input at frame t is the text embedding of token t-1 (the start id at t=0); the audio streams
        are absent (zero-embedded), so only the text embedding, the temporal transformer and the
        text head take part (:meth:`text_parameters`).
        """
        start = torch.full_like(text[:, :1], self.start_ids[0])
        inputs = torch.cat([start, text[:, :-1]], dim=1)
        return self.text_head(self.temporal(self.embeddings(inputs, 0)))

    def text_parameters(self) -> list[nn.Parameter]:
        """The parameters a text-only batch updates (text embedding, temporal transformer, text head)."""
        return [*self.embeddings.tables[0].parameters(), *self.temporal.parameters(), *self.text_head.parameters()]

    def step_flops(self, batch: int, frames: int, text_only: bool = False) -> dict[str, float]:
        """Forward + backward FLOPs of one training step, written out (matmuls only, 2 per MAC, x3).

        Multiply-accumulates per frame: each temporal layer qkv 3d^2 + out d^2 + gated MLP 3*d*h +
        attention (QK^T and AV over T frames: 2*T*d, halved by the causal mask: T*d); text head d*V.
        Depth transformer (audio batches only), per frame and each of its ``dep_q`` steps: input
        projection d*e, per layer 4e^2 + 3*e*h' + causal attention over ``dep_q`` steps (dep_q*e),
        head e*card. Embedding lookups, norms and softmax are left out. FLOPs = 2 x MACs; backward
        = 2 x forward.
        """
        dim, dep_dim = self.text_head.in_features, self.dep_in.shape[-1]
        layer = self.temporal.blocks[0]
        hidden = layer.down.in_features
        layers = len(self.temporal.blocks)
        temporal = layers * (4 * dim * dim + 3 * dim * hidden + dim * frames)  # attention: 2*T*d/2 MACs
        macs = temporal + dim * self.text_vocab
        if not text_only:
            dep_hidden = self.depformer.blocks[0].down.in_features
            dep_layers = len(self.depformer.blocks)
            per_step = dim * dep_dim + dep_layers * (4 * dep_dim * dep_dim + 3 * dep_dim * dep_hidden
                                                     + self.dep_q * dep_dim) + dep_dim * self.card
            macs += self.dep_q * per_step
        forward = 2.0 * macs * batch * frames
        return {"forward": forward, "backward": 2 * forward, "total": 3 * forward}


def text_loss(logits: torch.Tensor, text: torch.Tensor, vocab: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean next-token CE of a text-only batch over valid targets (``0 <= id < vocab``)."""
    valid = (text >= 0) & (text < vocab)
    loss, _ = _weighted_ce(logits, text, valid.float())
    return loss, {"loss_text": loss.detach()}


def _weighted_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted mean CE, per-target CE) over targets with non-zero weight."""
    target = torch.where(weights > 0, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="none")
    ce = ce.view(target.shape) * (weights > 0)
    return (ce * weights).sum() / weights.sum().clamp(min=1e-8), ce


def rq_loss(
    text_logits: torch.Tensor,
    audio_logits: torch.Tensor,
    delayed: torch.Tensor,
    model: RQTransformer,
    loss_config: Mapping[str, Any],
    text_pad_id: int,
    text_epad_id: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """moshi-finetune loss; returns ``(loss, metrics)`` with unweighted CE per stream group."""
    text_target = delayed[:, TEXT_STREAM]
    text_valid = (text_target >= 0) & (text_target < model.text_vocab)
    text_weights = text_valid.float()
    padding = (text_target == text_pad_id) | (text_target == text_epad_id)
    text_weights = torch.where(padding, text_weights * float(loss_config["text_padding_weight"]), text_weights)
    text_loss, text_ce = _weighted_ce(text_logits, text_target, text_weights)

    audio_target = delayed[:, 1 : 1 + model.dep_q]
    audio_valid = (audio_target >= 0) & (audio_target < model.card)
    codebook_weight = torch.ones(model.dep_q, device=delayed.device)
    codebook_weight[:: model.num_codebooks] = float(loss_config["first_codebook_weight"])
    audio_weights = audio_valid.float() * codebook_weight[None, :, None]
    audio_loss, audio_ce = _weighted_ce(audio_logits, audio_target, audio_weights)

    def mean(ce: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return (ce.sum() / valid.sum().clamp(min=1)).detach()

    n = model.num_codebooks
    metrics = {
        "loss_text": mean(text_ce, text_valid),
        "loss_text_words": mean(text_ce * ~padding, text_valid & ~padding),
        "loss_semantic": mean(audio_ce[:, 0], audio_valid[:, 0]),
        "loss_acoustic": mean(audio_ce[:, 1:n], audio_valid[:, 1:n]),
    }
    if model.dep_q > n:
        metrics["loss_other_semantic"] = mean(audio_ce[:, n], audio_valid[:, n])
        metrics["loss_other_acoustic"] = mean(audio_ce[:, n + 1 :], audio_valid[:, n + 1 :])
    return text_loss + audio_loss, metrics


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and non-embedding parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for name, p in model.named_parameters() if "embeddings" in name)
    return {"total": total, "non_embedding": total - embedding}
