"""Tessera's software: the golden model, the runtime, the lowering, the models, the command
line. Importing it registers the native simulator's profile training (the lowering's
workloads) with :mod:`tessera.sim.profile`, the layer below, which cannot import them."""

from ..sim import profile as _profile


def _train_profile(build, say=None):
    from .profile_training import train_profile

    return train_profile(build, say)


_profile.set_trainer(_train_profile)
