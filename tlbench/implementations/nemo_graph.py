"""Benchmark NeMo's graph RNN-T loss, ``GraphRnntLoss`` (k2 graphs; nemo-toolkit 3.0), on 4-D logits.

This is what NeMo's ``RNNTLoss(loss_name="graph_rnnt")`` instantiates: the RNN-T lattice is
built as a k2 ``FsaVec`` (the "grid" construction, NeMo's default), every arc takes its score
from the log-softmax of the logits, and k2's ``get_tot_scores`` (log semiring) gives the
per-utterance log-likelihood, whose negative is the loss. So it needs the real k2 (which
``scripts/setup.sh`` builds from source) besides NeMo. On CUDA its log-probabilities come from
a Triton kernel that keeps only the blank and label scores (NeMo reports about half the loss's
memory); on CPU it runs ``log_softmax`` over the whole vocabulary. The options are NeMo's
defaults (no double-precision lattice, no cast to float32). Labels and lengths are cast to
int64; reduction is the plain sum of the per-utterance losses.

Importing it needs more of NeMo than the numba loss (``tlbench/implementations/nemo.py``):
``graph_transducer.py`` subclasses ``nemo.core.classes.loss.Loss`` and imports k2 through
``nemo.core.utils.k2_guard``, so the import chain reaches hydra-core, omegaconf, lightning
(``k2_guard`` asks ``lightning`` whether k2 is installed), torchmetrics, huggingface_hub and
what they import; requirements-nemo.txt lists them (``--with nemo`` installs them with
``--no-deps``). Three package ``__init__`` files are not run (see :data:`SKIPPED_INITS`):
they import the ASR collection and NeMo's model and training classes (``ModelPT`` and its
Lightning callbacks, which import ``nv_one_logger``), none of which the loss uses.
"""

from __future__ import annotations

import importlib.metadata
import types

from tlbench.core.errors import first_line
from tlbench.implementations.declaration import Backend, BackendUnavailable, LossImplementation, VerifyVariant
from tlbench.implementations.loaders import import_without_inits

INSTALL_HINT = ("bash scripts/setup.sh --with nemo (NeMo and the packages its graph loss imports); the loss also needs "
                "k2, which scripts/setup.sh builds from source")
LOSS_MODULE = "nemo.collections.asr.parts.k2.graph_transducer"
# Packages registered without running their __init__ while LOSS_MODULE is imported:
#   nemo.collections.asr: imports the whole ASR collection (models, data, Lightning, Hydra, transformers, lhotse, ...);
#   nemo.core, nemo.core.classes: import ModelPT, Exportable and the mixins (the training stack, nv_one_logger, onnx).
SKIPPED_INITS = ("nemo.collections.asr", "nemo.core", "nemo.core.classes")


def import_loss_module():
    """``nemo.collections.asr.parts.k2.graph_transducer`` without the ``__init__`` of
    :data:`SKIPPED_INITS` (the modules it imports from those packages are loaded as usual)."""
    return import_without_inits(LOSS_MODULE, SKIPPED_INITS)


def load_backend() -> Backend:
    try:
        module = import_loss_module()
        nemo_version = importlib.metadata.version("nemo-toolkit")
        k2_version = importlib.metadata.version("k2")
    except Exception as error:  # ImportError, or k2_guard's ModuleNotFoundError when k2 is missing
        raise BackendUnavailable(f"NeMo's graph RNN-T loss ({LOSS_MODULE}) cannot be imported "
                                 f"({first_line(error, with_type=True)})", INSTALL_HINT) from None
    # Both libraries compute it: NeMo builds the graphs and scores, k2 runs them.
    return Backend("nemo", f"{nemo_version}, k2 {k2_version}",
                   types.SimpleNamespace(module=module, loss=module.GraphRnntLoss(blank=0)))


def per_utterance(backend, logits, targets, logit_lengths, target_lengths):
    """logits (N, T, U+1, V) raw (it takes log_softmax itself); int64 targets (N, U) and lengths (N,) -> (N,)."""
    return backend.module.loss(acts=logits, labels=targets.long(), act_lens=logit_lengths.long(),
                               label_lens=target_lengths.long())


def compute_loss(backend, logits, batch, joiner):
    loss = per_utterance(backend, logits, batch.targets, batch.logit_lengths, batch.target_lengths).sum()
    return loss, loss


def _verify_compute(backend, problem, device):
    import torch

    x = problem.leaf("logits", device)
    losses = per_utterance(backend, x, problem.ints("targets", device, dtype=torch.int64),
                           problem.ints("logit_lengths", device, dtype=torch.int64),
                           problem.ints("target_lengths", device, dtype=torch.int64))  # (N,)
    losses.sum().backward()
    return losses, {"logits": x.grad}


IMPLEMENTATION = LossImplementation(
    name="nemo_graph",
    load_backend=load_backend,
    loss=compute_loss,
    layout="4-D",
    install_hint=INSTALL_HINT,
    description="4-D logits; NeMo's GraphRnntLoss (k2 grid lattice, log semiring), reduction sum, int64 labels",
    verify=(VerifyVariant(variant="GraphRnntLoss (grid), per utterance", compute=_verify_compute),),
)
