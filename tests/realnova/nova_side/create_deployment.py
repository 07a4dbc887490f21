"""Makes a Nova deployment's databases with nova-manage's own commands, in one process:
``api_db sync``, ``cell_v2 map_cell0``, ``cell_v2 create_cell``, ``db sync``. The same
command implementations (``nova.cmd.manage``) as four ``nova-manage`` runs, without paying
Nova's start-up four times.

    python create_deployment.py --config-file nova.conf CELL0_URL CELL_NAME CELL_URL
"""

import os
import sys

# nova.cmd.manage applies eventlet's monkey patching at import unless told not to; these
# commands need no concurrency.
os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

from nova.cmd import manage  # noqa: E402  (first: it decides about eventlet)
from nova import config as nova_config  # noqa: E402
from nova import objects  # noqa: E402


def main(argv):
    config_args, (cell0_url, cell_name, cell_url) = argv[1:3], argv[3:6]
    nova_config.parse_args([argv[0], *config_args])
    objects.register_all()
    steps = [
        ("api_db sync", lambda: manage.ApiDbCommands().sync()),
        ("cell_v2 map_cell0",
         lambda: manage.CellV2Commands().map_cell0(database_connection=cell0_url)),
        ("cell_v2 create_cell",
         lambda: manage.CellV2Commands().create_cell(
             name=cell_name, database_connection=cell_url, transport_url="fake://")),
        ("db sync", lambda: manage.DbCommands().sync()),
    ]
    for name, step in steps:
        code = step()
        if code not in (None, 0):
            print(f"nova-manage {name} failed with {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
