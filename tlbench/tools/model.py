"""A Conformer transducer built from standard parts, for profiling a whole training step.

Parts (sizes from :class:`ModelConfig`):

- :class:`Conv2dSubsampling`: the 4x front end, two ``Conv2d(kernel 3, stride 2)`` + ReLU over
  (time, frequency) then a linear layer; ``T = ((T_in - 1) // 2 - 1) // 2``, so ``T_in = 4 T + 3``
  is the shortest input that gives exactly ``T`` frames.
- ``torchaudio.models.Conformer`` (12 layers, dim 512, 8 heads, feed-forward 2048, depthwise
  convolution kernel 31 by default).
- :class:`StatelessDecoder`: an embedding of the previous tokens and a depthwise ``Conv1d`` with a
  context of 2 tokens (the current and the one before), blank (0) standing for start-of-sentence.
- :class:`TransducerJoiner`: encoder and decoder projections to the joiner dim, then
  :class:`tlbench.data.batches.Joiner` (tanh + linear over V) on their sum.
- Two "simple loss" projections, encoder -> V and decoder -> V, for k2's pruned loss.

The module has no ``forward``: a training step (which loss, which labels) is put together by
``profile_model.py`` from :meth:`TransducerModel.encode` and :meth:`TransducerModel.decode`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Tuple

import torch
from torch import nn

from tlbench.data.batches import Joiner

__all__ = ["NUM_FEATURES", "SUBSAMPLING_FACTOR", "Conv2dSubsampling", "Encoder", "ModelConfig", "StatelessDecoder",
           "TransducerJoiner", "TransducerModel", "input_length_for", "random_features", "subsampled_length"]

NUM_FEATURES = 80
SUBSAMPLING_FACTOR = 4


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the transducer; defaults are the full-size model."""

    num_layers: int = 12
    model_dim: int = 512  # encoder (Conformer) width, also the front end's channel count
    num_heads: int = 8
    ffn_dim: int = 2048
    conv_kernel_size: int = 31  # depthwise convolution of each Conformer layer (odd)
    decoder_dim: int = 512
    joiner_dim: int = 512
    vocab_size: int = 500
    context_size: int = 2  # tokens the stateless decoder looks at
    dropout: float = 0.1
    num_features: int = NUM_FEATURES
    blank: int = 0

    def validate(self) -> "ModelConfig":
        """Raises ValueError naming the first size that cannot build a model."""
        for name in ("num_layers", "model_dim", "num_heads", "ffn_dim", "conv_kernel_size", "decoder_dim",
                     "joiner_dim", "context_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is not allowed; it must be >= 1")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size={self.vocab_size} is not allowed; it must be >= 2 (blank + one token)")
        if self.model_dim % self.num_heads:
            raise ValueError(f"model_dim={self.model_dim} is not divisible by num_heads={self.num_heads}; "
                             "pick sizes where it is (e.g. 512 and 8)")
        if self.conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size={self.conv_kernel_size} is not allowed; torchaudio's Conformer "
                             "needs an odd kernel size")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} is not allowed; it must be in [0, 1)")
        if subsampled_length(self.num_features) < 1:
            raise ValueError(f"num_features={self.num_features} is too small for the 4x front end (need >= 7)")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def subsampled_length(input_length):
    """Frames after the front end: ``((T_in - 1) // 2 - 1) // 2`` (int or int tensor)."""
    return ((input_length - 1) // 2 - 1) // 2


def input_length_for(num_frames: int) -> int:
    """The shortest ``T_in`` whose subsampled length is exactly ``num_frames`` (``4 T + 3``)."""
    return SUBSAMPLING_FACTOR * num_frames + 3


class Conv2dSubsampling(nn.Module):
    """4x subsampling in time (and frequency): ``(N, T_in, F) float32 -> (N, T, D) float32``."""

    def __init__(self, num_features: int, output_dim: int, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2), nn.ReLU(),
        )
        self.output = nn.Linear(channels * subsampled_length(num_features), output_dim)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """features: (N, T_in, F) float32; feature_lengths: (N,) int64.

        Returns ``(N, T, D) float32`` and the ``(N,) int64`` subsampled lengths.
        """
        x = self.conv(features.unsqueeze(1))  # (N, 1, T_in, F) -> (N, C, T, F')
        n, c, t, f = x.shape
        x = x.transpose(1, 2).reshape(n, t, c * f)  # (N, C, T, F') -> (N, T, C * F')
        return self.output(x), subsampled_length(feature_lengths)


class Encoder(nn.Module):
    """Front end + ``torchaudio.models.Conformer``: ``(N, T_in, F) -> (N, T, D)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        from torchaudio.models import Conformer

        self.embed = Conv2dSubsampling(config.num_features, config.model_dim, channels=config.model_dim)
        self.conformer = Conformer(input_dim=config.model_dim, num_heads=config.num_heads, ffn_dim=config.ffn_dim,
                                   num_layers=config.num_layers, depthwise_conv_kernel_size=config.conv_kernel_size,
                                   dropout=config.dropout)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """features: (N, T_in, F) float32; feature_lengths: (N,) int64 -> ((N, T, D) float32, (N,) int64)."""
        x, lengths = self.embed(features, feature_lengths)
        return self.conformer(x, lengths)


class StatelessDecoder(nn.Module):
    """Prediction network without recurrence: ``(N, U + 1) int64 tokens -> (N, U + 1, D) float32``.

    Output ``u`` depends on tokens ``u - context_size + 1 .. u`` only (left-padded with blank).
    """

    def __init__(self, vocab_size: int, dim: int, context_size: int, blank: int):
        super().__init__()
        self.blank = blank
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, dim)
        # Depthwise: each embedding channel mixes only its own values over the context.
        self.conv = nn.Conv1d(dim, dim, kernel_size=context_size, groups=dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (N, U + 1) int64, starting with blank -> (N, U + 1, D) float32."""
        x = self.embedding(tokens).transpose(1, 2)  # (N, U+1, D) -> (N, D, U+1)
        x = nn.functional.pad(x, (self.context_size - 1, 0))  # (N, D, U+1) -> (N, D, U+context)
        x = self.conv(x).transpose(1, 2)  # (N, D, U+1) -> (N, U+1, D)
        return torch.relu(x)


class TransducerJoiner(nn.Module):
    """Projects encoder and decoder outputs to the joiner dim; ``output`` maps a joined grid to logits."""

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output = Joiner(joiner_dim, vocab_size)  # tanh + Linear(J, V), shared with the loss benchmarks

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        """encoder_out: (N, T, D_enc); decoder_out: (N, U+1, D_dec) -> full logits (N, T, U+1, V) float32."""
        am = self.encoder_proj(encoder_out).unsqueeze(2)  # (N, T, J) -> (N, T, 1, J)
        lm = self.decoder_proj(decoder_out).unsqueeze(1)  # (N, U+1, J) -> (N, 1, U+1, J)
        return self.output(am + lm)


class TransducerModel(nn.Module):
    """Encoder, stateless decoder, joiner and the simple-loss projections."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.encoder = Encoder(config)
        self.decoder = StatelessDecoder(config.vocab_size, config.decoder_dim, config.context_size, config.blank)
        self.joiner = TransducerJoiner(config.model_dim, config.decoder_dim, config.joiner_dim, config.vocab_size)
        self.simple_am_proj = nn.Linear(config.model_dim, config.vocab_size)
        self.simple_lm_proj = nn.Linear(config.decoder_dim, config.vocab_size)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """features: (N, T_in, F) float32; feature_lengths: (N,) int64 -> ((N, T, D_enc) float32, (N,) int64)."""
        return self.encoder(features, feature_lengths)

    def decode(self, targets: torch.Tensor) -> torch.Tensor:
        """targets: (N, U) int -> decoder output (N, U + 1, D_dec) float32 (blank prepended as start)."""
        start = torch.full((targets.size(0), 1), self.config.blank, dtype=torch.int64, device=targets.device)
        return self.decoder(torch.cat([start, targets.long()], dim=1))  # (N, U+1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def random_features(frames: torch.Tensor, num_features: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random input features whose subsampled lengths are exactly ``frames``.

    Args:
      frames: (N,) int64, the T_i wanted after subsampling.

    Returns:
      features ``(N, 4 max(T) + 3, F) float32`` (standard normal) and their ``(N,) int64`` lengths
      ``4 T_i + 3``.
    """
    lengths = input_length_for(frames.to(torch.int64))
    features = torch.randn(frames.numel(), int(lengths.max()), num_features, device=device)
    return features, lengths.to(device)
