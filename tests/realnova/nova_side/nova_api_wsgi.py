"""The WSGI entry gunicorn loads for nova-api: Nova's own ``nova.wsgi.osapi_compute``.

oslo.config parses ``sys.argv`` when Nova initialises (as it does under uWSGI's --pyargv);
gunicorn's own arguments must not reach it, so argv is cut to the program name first. The
configuration comes from ``OS_NOVA_CONFIG_DIR`` and ``OS_NOVA_CONFIG_FILES`` (the paste file
first, then nova.conf), which the test fixture sets.
"""

import sys

sys.argv = sys.argv[:1]

from nova.wsgi.osapi_compute import application  # noqa: E402,F401
