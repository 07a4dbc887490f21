"""A real Keystone 30 for the tests: the server, its set-up and its REST helpers live in
``bench/keystone_server.py`` (the ``edge`` benchmark starts the same Keystone); this is
the tests' name for them."""

from bench.keystone_server import (ADMIN_PASSWORD, CORE_REGION, EDGE_REGION, PASSWORD,
                                   SERVICE_PASSWORD, SERVICE_USER, Keystone, KeystoneError,
                                   make_keystone)

__all__ = ["ADMIN_PASSWORD", "CORE_REGION", "EDGE_REGION", "PASSWORD", "SERVICE_PASSWORD",
           "SERVICE_USER", "Keystone", "KeystoneError", "make_keystone"]
