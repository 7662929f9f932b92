"""Privacy on the node that owns the data.

``allowlist`` says what may leave a client, ``dp`` adds differential privacy, ``policy``
is the node's own policy and ``audit`` its log.
"""
