"""Benchmark warprnnt_numba.RNNTLossNumba (NeMo's numba RNN-T loss) on 4-D logits.

Its CPU path runs about 500 tiny torch ops per (t, u) lattice cell: unrecorded it is ~25x
slower than torchaudio, and recording every op would take tens of GB for one LibriSpeech
utterance. So the ops inside its loss call are hidden from the profiler (the step and the
loss region are still timed), and on CPU its quick preset keeps utterances of T <= 50 (one per sorted batch) and
records one step per mode. numba's JIT compilation runs on a tiny problem before profiling
so that it never lands in a measured step.
"""

from tlbench.implementations.conditions import more_cells_than_on_cpu
from tlbench.implementations.declaration import Backend, BackendUnavailable, LossImplementation, VerifyVariant

INSTALL = "pip install warprnnt-numba==0.4.1 numba==0.68.1"
# Its CPU path issues Python-level torch ops per lattice cell (2-3 ms per cell here):
# verification problems with more cells than this are skipped on CPU.
CPU_MAX_CELLS = 1500


def load_backend() -> Backend:
    try:
        import importlib.metadata

        import warprnnt_numba
    except Exception as error:
        raise BackendUnavailable(f"warprnnt_numba cannot be imported ({error})", INSTALL) from None
    return Backend("warprnnt_numba", importlib.metadata.version("warprnnt-numba"), warprnnt_numba)


def warm_up(backend, device) -> None:
    import torch

    logits = torch.zeros(1, 2, 2, 3, device=device, requires_grad=True)  # (N, T, U+1, V)
    ones = torch.ones(1, dtype=torch.int32, device=device)
    backend.module.RNNTLossNumba(blank=0, reduction="sum")(logits, ones.view(1, 1), 2 * ones, ones).backward()


def compute_loss(backend, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32; labels (N, U) int32; lengths (N,) int32."""
    loss = backend.module.RNNTLossNumba(blank=0, reduction="sum")(logits, batch.targets, batch.logit_lengths,
                                                                   batch.target_lengths)
    return loss, loss


def verify_call(backend, problem, device):
    x = problem.leaf("logits", device)  # it applies log_softmax itself on CPU
    losses = backend.module.RNNTLossNumba(blank=0, reduction="none")(
        x, problem.ints("targets", device), problem.ints("logit_lengths", device), problem.ints("target_lengths", device))
    losses.sum().backward()
    return losses, {"logits": x.grad}



IMPLEMENTATION = LossImplementation(
    name="warprnnt_numba",
    load_backend=load_backend,
    loss=compute_loss,
    layout="4-D",
    install_hint=INSTALL,
    description="warprnnt_numba.RNNTLossNumba on 4-D logits",
    warm_up=warm_up,
    hide_inner_ops=True,
    quick_overrides={"max_utterance_frames": 50, "max_frames": 50, "wait": 0, "warmup": 0, "active": 1, "repeat": 1},
    verify=(VerifyVariant("RNNTLossNumba", verify_call, skip=more_cells_than_on_cpu(CPU_MAX_CELLS)),),
    loss_only=(),
    loss_only_note="its CPU path runs Python-level torch ops per lattice cell: minutes for this batch",
)
