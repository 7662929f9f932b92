"""Flower Deployment Engine: TLS material, SuperNode keys, a local loopback federation.

Flower 1.41's deployment runtime is one ``flower-superlink`` (a single HTTPS port serving
the Fleet, Control and Runtime APIs) and one ``flower-supernode`` per data owner. This
package provides what a trial of it needs:

- :func:`make_test_certificates` — a throw-away CA and a server certificate for the
  SuperLink (testing only: a real deployment uses the hospital's own PKI);
- :func:`make_node_keys` — a SuperNode's EC key pair (OpenSSH format, what
  ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read);
- :class:`LocalFederation` / :func:`run_local_federation` — a SuperLink with TLS and
  SuperNode authentication, N registered SuperNodes each with its own private data file
  and state directory, and ``flwr run`` submitting FedPIT, all on 127.0.0.1.

Modules: ``credentials`` (certificates and node keys), ``nodes`` (each node's data and
node configuration), ``processes`` (ports, executables, process trees), ``flwr_cli`` (the
``flwr`` CLI's connection and commands), ``federation`` (:class:`LocalFederation`),
and ``local`` (:func:`run_local_federation`: one job, start to summary). The
commands ``fedpit certs | node-key | federation local`` live in :mod:`fedpit.cli.deploy`.
"""

from fedpit.deploy.credentials import make_node_keys, make_test_certificates
from fedpit.deploy.errors import DeployError
from fedpit.deploy.federation import LocalFederation
from fedpit.deploy.local import run_config_for, run_local_federation
from fedpit.deploy.nodes import NodeSpec, check_not_packed, split_to_nodes, write_examples
from fedpit.deploy.processes import descendants, https_open

__all__ = [
    "DeployError",
    "LocalFederation",
    "NodeSpec",
    "check_not_packed",
    "descendants",
    "https_open",
    "make_node_keys",
    "make_test_certificates",
    "run_config_for",
    "run_local_federation",
    "split_to_nodes",
    "write_examples",
]
