"""Typed errors raised by the library; only ``tools/*.py`` turns them into exit codes."""

import signal


class CompressReIDError(Exception):
    """Base class for every error the library raises on purpose."""


class ConfigError(CompressReIDError, ValueError):
    """A configuration file, key or value is invalid (bad usage: exit code 2)."""


class DataError(CompressReIDError, ValueError):
    """A dataset, image or split is missing, corrupt or empty (bad input: exit code 2)."""


class CheckpointError(CompressReIDError, ValueError):
    """A checkpoint cannot be loaded safely or does not fit the model (bad input: exit code 2)."""


class TrainingDiverged(ConfigError):
    """The training loss became NaN or infinite: with inputs that were checked, that is a learning rate (or
    gradient scale) the model cannot take, so a configuration error (exit code 2)."""


class GateFailed(CompressReIDError):
    """A stage regressed beyond its configured tolerance (exit code 3).

    Args:
        decisions: the recorded gate decisions, failed ones included.
    """

    def __init__(self, message: str, decisions=None):
        super().__init__(message)
        self.decisions = list(decisions or [])


class ExportError(CompressReIDError, ValueError):
    """A model or ONNX graph cannot be exported, quantized or run as asked: an unsupported operator, an input
    that does not match, a model card that disagrees with its graph (bad input: exit code 2)."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGTERM from ``kill``, a scheduler or torchrun; SIGINT is Python's own
    KeyboardInterrupt). A KeyboardInterrupt so that no ``except Exception`` on the way swallows it, while run
    folders and the pipeline record it as 'interrupted'.

    Args:
        signum: the signal's number (the tools exit with 128 + signum, as a shell reports a signal).
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
