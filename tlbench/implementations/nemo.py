"""Benchmark NeMo's default RNN-T loss, ``RNNTLossNumba`` (numba; nemo-toolkit 3.0), on 4-D logits.

This is what NeMo's ``RNNTLoss(loss_name="default")`` instantiates (``"default"`` resolves to
``"warprnnt_numba"``): the maintained successor of the warprnnt_numba package, with the same
CPU path. It takes raw logits; on CPU it applies ``log_softmax`` itself (upcasting float16 to
float32 first), on CUDA the numba kernels do. Labels and lengths must be int64, and the padded
logits must be exactly ``(N, max T_i, max U_i + 1, V)``. Reduction ``"sum"`` is the plain sum of
the per-utterance losses (``"mean"`` divides by N, no per-frame or per-token normalisation).
float16 logits are upcast to float32 on CPU and passed as they are to the CUDA kernels (float32
workspace; not run here); bfloat16 is refused (see :func:`supports_config`).

The loss lives in ``nemo.collections.asr.parts.numba.rnnt_loss``, which needs only torch, numba
and numpy; but importing it normally runs ``nemo.collections.asr``'s ``__init__``, which imports
the whole ASR collection (Lightning, Hydra, transformers, lhotse, ...: ~90 more packages). So
:func:`import_loss_package` imports that package without running its ``__init__`` (the
loss package's own ``__init__`` files run as usual), and the optional setup step installs
nemo-toolkit alone (``pip install --no-deps``; see requirements-nemo.txt).

Like warprnnt_numba, its CPU path runs hundreds of tiny torch ops per (t, u) lattice cell
(~250 profiler events per cell measured, ~0.14 ms per cell unprofiled on 2 cores), so the ops
inside its loss call are hidden from the profiler. Even hidden, they leave ~320 ``[memory]``
events per cell: the plain quick preset (full-length utterances) was killed for memory at 22 GB
on a 23 GB machine, so on CPU its quick preset keeps utterances of T <= 50 and records one step
per mode (the same overrides as warprnnt_numba, so the two land in the same tables). The numba
CUDA kernels compile on a tiny problem before profiling.
"""

from __future__ import annotations

import types
from typing import Optional

from tlbench.core.errors import first_line
from tlbench.implementations.conditions import more_cells_than_on_cpu
from tlbench.implementations.declaration import Backend, BackendUnavailable, LossImplementation, VerifyVariant
from tlbench.implementations.loaders import import_without_inits

INSTALL_HINT = "bash scripts/setup.sh --with nemo"
ASR_PACKAGE = "nemo.collections.asr"
LOSS_PACKAGE = ASR_PACKAGE + ".parts.numba.rnnt_loss"
# its CPU path takes ~0.14 ms per lattice cell here: larger verify problems are skipped on CPU
CPU_MAX_VERIFY_CELLS = 20000


def import_loss_package():
    """``nemo.collections.asr.parts.numba.rnnt_loss``, without running ``nemo.collections.asr``'s
    ``__init__`` (which imports the whole ASR collection and its training stack); ``nemo`` and
    ``nemo.collections`` are imported as usual (their ``__init__`` files only read the package
    info). With ``nemo.collections.asr`` already imported (a full NeMo install in use), the
    normal import is used."""
    return import_without_inits(LOSS_PACKAGE, (ASR_PACKAGE,))


def load_backend() -> Backend:
    try:
        import importlib.metadata

        loss_package = import_loss_package()
        version = importlib.metadata.version("nemo-toolkit")
    except Exception as error:  # ImportError, or numba failing to initialise
        raise BackendUnavailable(f"NeMo's numba RNN-T loss ({LOSS_PACKAGE}) cannot be imported "
                                 f"({first_line(error, with_type=True)})", INSTALL_HINT) from None
    return Backend("nemo", version, types.SimpleNamespace(
        package=loss_package,
        sum=loss_package.RNNTLossNumba(blank=0, reduction="sum"),  # the benchmark's loss
        none=loss_package.RNNTLossNumba(blank=0, reduction="none"),  # per utterance, for verify
    ))


def warm_up(backend, device) -> None:
    """Runs the loss once on a tiny problem (numba compiles its CUDA kernels on first use)."""
    import torch

    logits = torch.zeros(1, 2, 2, 3, device=device, requires_grad=True)  # (N, T, U+1, V)
    ones = torch.ones(1, dtype=torch.int64, device=device)
    backend.module.sum(logits, ones.view(1, 1), 2 * ones, ones).sum().backward()


def compute_loss(loss_module, logits, batch, joiner):
    """logits: (N, T, U+1, V) raw joiner output; targets (N, U) and lengths (N,) cast to the int64 it requires."""
    loss = loss_module(logits, batch.targets.long(), batch.logit_lengths.long(),
                       batch.target_lengths.long()).sum()  # its "sum" has shape (1,): make it a scalar
    return loss, loss


def supports_config(config) -> Optional[str]:
    if config.dtype != "bfloat16":
        return None  # float32; float16 (upcast to float32 by RNNTLossNumba on CPU, native on CUDA)
    if config.device == "cpu":
        return ("bfloat16: NeMo 3.0's CPU path keeps alphas/betas in the logits' dtype; in bfloat16 it warns of "
                "a forward/backward likelihood mismatch and is off by ~3e-3 (loss) and 0.1-0.6 (gradient, "
                "relative) from the exact loss of the same bfloat16 logits; NeMo's RNNTLoss wrapper upcasts "
                "such input to float32 unless NUMBA_CUDA_USE_NVIDIA_BINDING=1")
    return ("bfloat16: NeMo 3.0 hands the activations to its numba CUDA kernels as they are, and numba has no "
            "bfloat16 type (torch exports it as typestr '<V2', which numba's from_dtype rejects); reported to fail "
            "at kernel compile time (NVIDIA-NeMo/Speech pull request 15996, not in 3.0.0)")


def _verify_compute(backend, problem, device):
    import torch

    x = problem.leaf("logits", device)  # raw logits: it takes log_softmax itself
    losses = backend.module.none(x, problem.ints("targets", device, dtype=torch.int64),
                                 problem.ints("logit_lengths", device, dtype=torch.int64),
                                 problem.ints("target_lengths", device, dtype=torch.int64))  # (N,)
    losses.sum().backward()
    return losses, {"logits": x.grad}



IMPLEMENTATION = LossImplementation(
    name="nemo",
    load_backend=load_backend,
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module.sum, logits, batch, joiner),
    layout="4-D",
    install_hint=INSTALL_HINT,
    description="4-D logits; NeMo's RNNTLossNumba (its default RNNTLoss), reduction sum, int64 labels",
    supports_config=supports_config,
    warm_up=warm_up,
    hide_inner_ops=True,
    quick_overrides={"max_utterance_frames": 50, "max_frames": 50, "wait": 0, "warmup": 0, "active": 1, "repeat": 1},
    verify=(VerifyVariant(variant="RNNTLossNumba, reduction none", compute=_verify_compute,
                          skip=more_cells_than_on_cpu(CPU_MAX_VERIFY_CELLS)),),
)
