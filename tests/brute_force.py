"""The exact transducer loss of one small utterance by enumerating every alignment: the test
oracle that does not share code with the losses it checks."""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import torch


def brute_force(log_probs: torch.Tensor, labels: Sequence[int], one_sym_per_frame: bool) -> Optional[torch.Tensor]:
    """-log of the sum over every alignment (differentiable), or None when there is none.

    log_probs: (T, U + 1, V) float64 log-softmax; labels: list of U ints. A path is T - 1 + U
    moves (standard: T - 1 blanks and U labels in any order) or T - 1 moves of which U are
    labels (modified: a label also moves to the next frame), then the final blank at (T - 1, U).
    """
    t_len, u1_len, _ = log_probs.shape
    u_len = u1_len - 1
    n_moves = t_len - 1 if one_sym_per_frame else t_len - 1 + u_len
    scores = []
    for moves in itertools.product((0, 1), repeat=n_moves):  # 0 = blank, 1 = label
        if sum(moves) != u_len:
            continue
        t = u = 0
        score = log_probs.new_zeros(())
        for move in moves:
            if move == 0:
                score = score + log_probs[t, u, 0]
                t += 1
            else:
                score = score + log_probs[t, u, labels[u]]
                u += 1
                t += 1 if one_sym_per_frame else 0
        assert (t, u) == (t_len - 1, u_len)
        scores.append(score + log_probs[t_len - 1, u_len, 0])
    if not scores:
        return None
    return -torch.logsumexp(torch.stack(scores), 0)
