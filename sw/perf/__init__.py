"""The performance model: the cycles and counters of a command program, predicted from the
configuration and the memory's timing, with no data computed (:mod:`.model`)."""

from .model import PerfModel, Prediction, Timing

__all__ = ["PerfModel", "Prediction", "Timing"]
