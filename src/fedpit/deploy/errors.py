"""The error every deployment step raises."""

from fedpit.errors import FedPITError


class DeployError(FedPITError):
    """A deployment step failed (a process did not start, a run did not finish)."""
