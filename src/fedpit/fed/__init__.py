"""The methods and the federation on Flower.

``client`` is a client's round and the methods, ``standalone`` the non-federated
baselines, ``client_app`` and ``server_app`` are Flower's apps, ``strategy`` and
``robust`` aggregate, ``validation`` checks uploads, ``records`` converts values to Flower
records and ``server_state`` makes a run resumable.
"""
