"""(ε, δ) accounting of Gaussian releases with Flower's RDP accountant, on plain numbers.

A leaf module: it imports nothing from FedPIT, and Flower only when an accountant is
made. The configuration checks project a run's ε with it before any work;
:mod:`fedpit.privacy.dp` accounts the releases of a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.serverapp import RdpAccountant


def rdp_accountant(
    noise_multiplier: float,
    delta: float,
    population: int,
    sample_size: int,
    max_epsilon: float | None = None,
    released: int = 0,
) -> RdpAccountant | None:
    """Flower's RDP accountant, or ``None`` without noise (nothing to account).

    Args:
        noise_multiplier: z, the noise standard deviation over the clipping norm.
        delta: The target δ.
        population: The number of clients.
        sample_size: The clients sampled, and aggregated, per round.
        max_epsilon: The budget at which the accountant stops the run (``None``: none).
        released: Rounds already released (a resumed run composes them up front).
    """
    if noise_multiplier <= 0:
        return None
    # Flower is imported here, not above: the configuration checks (and so `fedpit --help`)
    # must not load it.
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=population,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=max_epsilon,
        )
    )
    if released:
        event = GaussianPrivacyEvent(noise_multiplier, sample_size, population)
        accountant.compose(event, count=released)
    return accountant


def projected_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The ε Flower's accountant reports after ``rounds`` releases at ``delta`` (z > 0)."""
    accountant = rdp_accountant(
        noise_multiplier, delta, population=1, sample_size=1, released=rounds
    )
    if accountant is None:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    return accountant.get_privacy_spent().epsilon
