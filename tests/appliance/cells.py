"""An appliance (``appliance serve``) fed by real cells: cell databases in a temporary
directory, their publishers (``appliance cell``) as processes a test may stop and start,
and the supervisor with its workers, ingest and admin listener."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from tests.appliance.conftest import PYTHON, Running, get, start_process
from tests.conftest import free_port, wait_for

FLAVOR_SOURCE = "flavors"


def _prepare_cell(db: str, name: str, servers: int, seed: int, flavors: bool) -> None:
    from replica.cell.outbox import init_cell_db
    from replica.cell.simulator import populate, seed_flavors
    init_cell_db(db, name, flavors=flavors)
    if flavors:
        seed_flavors(db)
    elif servers:
        populate(db, servers, 3, seed=seed)


class CellsAppliance:
    """``start()`` runs the publishers and the appliance; ``stop()`` ends them all."""

    def __init__(self, directory, cells=("cell1", "cell2"), servers: int = 20,
                 workers: int = 1, settings: str = "", admin_token: str | None = None,
                 keyed: bool = False):
        """``keyed``: each feed sealed with a key file of its own (both sides)."""
        self.dir = str(directory)
        self.admin_token = admin_token
        if admin_token:
            settings += f'\nadmin_token = "{admin_token}"\nadmin_token_always = true\n'
        os.makedirs(self.dir, exist_ok=True)
        self.names = list(cells) + [FLAVOR_SOURCE]
        self.port, self.admin_port = free_port(), free_port()
        self.feeds = {}
        for index, name in enumerate(self.names):
            self.feeds[name] = {"db": os.path.join(self.dir, f"{name}.db"),
                                "feed": f"ipc://{self.dir}/{name}.feed",
                                "control": f"ipc://{self.dir}/{name}.ctl",
                                "key_file": None}
            if keyed:
                from replica.key_file import write_new_key_file
                self.feeds[name]["key_file"] = os.path.join(self.dir, f"{name}.key")
                write_new_key_file(self.feeds[name]["key_file"])
            _prepare_cell(self.feeds[name]["db"], name, servers, index + 1,
                          name == FLAVOR_SOURCE)
        self.config = os.path.join(self.dir, "appliance.toml")
        lines = [f"listen_port = {self.port}", f"admin_port = {self.admin_port}",
                 f"workers = {workers}", f'data_dir = "{self.dir}/data"',
                 "graceful_timeout = 10", settings]
        for name, feed in self.feeds.items():
            kind = "flavors" if name == FLAVOR_SOURCE else "servers"
            lines += ["[[cell]]", f'name = "{name}"', f'kind = "{kind}"',
                      f'feed = "{feed["feed"]}"', f'control = "{feed["control"]}"']
            if feed["key_file"]:
                lines.append(f'key_file = "{feed["key_file"]}"')
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.publishers: dict[str, Running] = {}
        self.appliance: Running | None = None

    def start_publisher(self, name: str) -> Running:
        feed = self.feeds[name]
        running = start_process(
            [PYTHON, "-m", "appliance", "cell", "--db", feed["db"], "--name", name,
             "--feed", feed["feed"], "--control", feed["control"]]
            + (["--key-file", feed["key_file"]] if feed["key_file"] else []),
            {}, self.dir, log_name=f"{name}.publisher.log")
        self.publishers[name] = running
        wait_for(lambda: os.path.exists(feed["control"][len("ipc://"):]), 15,
                 what=f"publisher {name} control socket")
        return running

    def stop_publisher(self, name: str) -> None:
        running = self.publishers.pop(name, None)
        if running is not None:
            running.stop()

    def start(self, publishers: bool = True, wait_ready: bool = True) -> "CellsAppliance":
        if publishers:
            for name in self.names:
                self.start_publisher(name)
        self.appliance = start_process([PYTHON, "-m", "appliance", "serve", "--config",
                                        self.config], {}, os.path.join(self.dir, "data"),
                                       port=self.port, admin_port=self.admin_port)
        # The workers answer version discovery whatever the cells do.
        wait_for(lambda: get(self.port, "/", timeout=2)[0] == 200, timeout=30,
                 what="the API workers listening")
        if wait_ready:
            self.wait_ready()
        return self

    def admin(self, path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}")
        if self.admin_token:
            request.add_header("X-Auth-Token", self.admin_token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self) -> dict:
        return json.loads(self.admin("/status")[1])

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_for(lambda: self.admin("/readyz")[0] == 200, timeout=timeout,
                 interval=0.1, what="appliance ready")
        self.appliance.remember_children()

    def stop(self) -> None:
        if self.appliance is not None:
            self.appliance.stop()
        for name in list(self.publishers):
            self.stop_publisher(name)
