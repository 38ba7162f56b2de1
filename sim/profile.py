"""Where the native simulator's profile training comes from.

A profile-guided native build (:func:`tessera.sim.native.build_native`) runs workloads on
its instrumented simulator between its two compiles. The workloads are lowered programs
(a product, a BERT layer, GPT-2 decode steps), which this layer cannot import: the layer
above registers them here (:mod:`tessera.sw` does so when it is imported, with
:func:`tessera.sw.profile_training.train_profile`). Without a registered trainer, native
builds are not profile-guided.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["set_trainer", "trainer"]

#: ``trainer(build, say) -> dict``: runs the workloads on ``build`` (an instrumented
#: :class:`~tessera.sim.native.NativeBuild`), calls ``say(text)`` with what runs (for the
#: build's progress line), and returns what it ran.
_trainer: Callable | None = None


def set_trainer(train: Callable | None) -> None:
    """Register the profile's training (None: none, and native builds are unprofiled)."""
    global _trainer
    _trainer = train


def trainer() -> Callable | None:
    """The registered training, or None."""
    return _trainer
