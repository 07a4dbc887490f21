"""Keystone's WSGI application for gunicorn (loaded by the side environment's python).

oslo.config parses the process's argv when Keystone builds its app; under gunicorn that
would be gunicorn's own arguments. So argv is reduced to the program name first; the
configuration comes from ``OS_KEYSTONE_CONFIG_DIR``."""

import sys

sys.argv = sys.argv[:1]

from keystone.server.wsgi import initialize_public_application  # noqa: E402

application = initialize_public_application()
