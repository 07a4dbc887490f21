"""The command line: ``appliance <command>``. It parses and prints; the work is done by
the modules it calls (the supervisor, the cell side, the admin listener over HTTP).

Exit codes: 0 success, 1 failure (or drift found by ``verify``), 2 bad command line or
bad setting (one line on stderr, no traceback), 141 the output was closed early
(``appliance status | head -1``: no message).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from appliance import logs
from appliance.settings import (SECRETS, SettingsError, check_files, deployment_problems,
                                exposure_warnings, key_file_problems, load, render_docs)

DEFAULT_ADMIN_URL = "http://127.0.0.1:8775"
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE   # as a shell reports a program SIGPIPE ended
PROGRESS_WIDTH = 30


class Parser(argparse.ArgumentParser):
    """Bad command lines are one line on stderr (what is wrong, where to read more)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _help(description: str, examples: str) -> dict:
    return {"description": description, "epilog": "examples:\n" + examples,
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def _number(parse, what: str, low, high=None, bound: str = ""):
    """An argparse type: ``parse`` the text, refuse values outside [low, high]."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {bound}, got {value}")
        return value
    return convert


_positive_int = _number(int, "a whole number", 1, bound="a number of at least 1")
_count = _number(int, "a whole number", 0, bound="0 or more")
_rate = _number(float, "a number", 0, bound="0 or more")
_port = _number(int, "a port number", 0, 65535, bound="a port 0-65535")


def _admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin-url", metavar="URL",
                        help=f"admin listener (default: from --config, else "
                             f"{DEFAULT_ADMIN_URL})")
    parser.add_argument("--token", metavar="TOKEN",
                        help="admin token (default: from --config or APPLIANCE_ADMIN_TOKEN)")
    parser.add_argument("--config", metavar="FILE", help="the appliance's TOML config file")


def build_parser() -> Parser:
    parser = Parser(prog="appliance", **_help(
        "Edge read replica of the OpenStack Compute API v2.1, fed by cell change feeds.",
        "  appliance demo                          # everything on this machine, until Ctrl-C\n"
        "  appliance serve --config /etc/appliance/appliance.toml\n"
        "  appliance status\n"
        "  appliance version --json"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="run a self-contained demo (simulated cells, churn)",
                          **_help("Start two simulated cells with churn, their publishers, a "
                                  "flavor source and the appliance; print URLs and example "
                                  "commands; run until Ctrl-C.",
                                  "  appliance demo\n"
                                  "  appliance demo --cells 3 --servers 3000 --rate 50\n"
                                  "  appliance demo --data-dir /tmp/demo --port 9774 "
                                  "--admin-port 9775"))
    demo.add_argument("--data-dir", metavar="DIR",
                      help="keep everything here (default: a temporary directory, removed "
                           "at exit)")
    demo.add_argument("--cells", type=_positive_int, default=2, help="simulated cells (2)")
    demo.add_argument("--servers", type=_count, default=1000,
                      help="servers in total, split between the cells (1000)")
    demo.add_argument("--rate", type=_rate, default=20.0,
                      help="lifecycle operations per second per cell (20)")
    demo.add_argument("--port", type=_port, default=8774, help="Compute API port (8774)")
    demo.add_argument("--admin-port", type=_port, default=8775, help="admin port (8775)")
    demo.add_argument("--workers", type=_positive_int, default=None,
                      help="API workers (default: CPU cores)")

    serve = sub.add_parser("serve", help="run the appliance from a config file",
                           **_help("Run the supervisor, API workers, ingest and admin "
                                   "listener. Settings: the TOML file, overridden by "
                                   "APPLIANCE_* environment variables (docs/configuration"
                                   ".md). SIGHUP reloads, SIGTERM stops gracefully.",
                                   "  appliance serve --config /etc/appliance/appliance.toml\n"
                                   "  APPLIANCE_WORKERS=4 appliance serve --config a.toml\n"
                                   "  appliance serve --config a.toml --check"))
    serve.add_argument("--config", metavar="FILE", help="TOML config file")
    serve.add_argument("--check", action="store_true",
                       help="validate the settings (and the tokens file, the cells), print "
                            "them, warn about settings that expose data, and exit (2 if "
                            "something is wrong)")

    cell = sub.add_parser("cell", help="publish a cell database's change feed "
                                       "(and init / populate / simulate it)",
                          **_help("Run the publisher beside a cell database: tail its "
                                  "outbox, publish the feed, answer control requests. "
                                  "Subcommands prepare and drive a cell database.",
                                  "  appliance cell --db cell1.db --name cell1 "
                                  "--feed tcp://0.0.0.0:7001 --control tcp://0.0.0.0:7002\n"
                                  "  appliance cell --source mysql://replica@db/nova_cell1 "
                                  "--api-source mysql://replica@db/nova_api --name cell1 "
                                  "--state-dir /var/lib/appliance-cell --password-file "
                                  "/etc/appliance/db-password --feed tcp://0.0.0.0:7001 "
                                  "--control tcp://0.0.0.0:7002\n"
                                  "  appliance cell --source mysql://replica@db/nova_api "
                                  "--flavors --name flavors --state-dir /var/lib/appliance-cell "
                                  "--feed tcp://0.0.0.0:7011 --control tcp://0.0.0.0:7012\n"
                                  "  appliance cell init --db cell1.db --name cell1\n"
                                  "  appliance cell init --db api.db --name flavors --flavors\n"
                                  "  appliance cell populate --db cell1.db --servers 1000 "
                                  "--projects 10\n"
                                  "  appliance cell simulate --db cell1.db --rate 20 "
                                  "--servers 1000 --projects 10 --duration 60"))
    cell.add_argument("--db", metavar="PATH", help="the cell database (SQLite)")
    cell.add_argument("--source", metavar="URL",
                      help="a MariaDB/MySQL cell database, read through its binlog: "
                           "mysql://USER@HOST[:PORT]/nova_cell1 (with --flavors: Nova's "
                           "API database, mysql://USER@HOST[:PORT]/nova_api)")
    cell.add_argument("--api-source", metavar="URL",
                      help="with --source: Nova's API database, mysql://USER@HOST[:PORT]/"
                           "nova_api (server groups, request specs, instance mappings)")
    cell.add_argument("--flavors", action="store_true",
                      help="with --source: publish the flavors of the API database it names")
    cell.add_argument("--password-file", metavar="FILE",
                      help="with --source: the database password (first line); else the "
                           "environment variable APPLIANCE_MYSQL_PASSWORD")
    cell.add_argument("--state-dir", metavar="DIR",
                      help="with --source: where the publisher keeps its journal "
                           "(<DIR>/<name>.journal)")
    cell.add_argument("--name", help="the cell's name")
    cell.add_argument("--feed", metavar="URL", help="PUB address, e.g. tcp://0.0.0.0:7001")
    cell.add_argument("--control", metavar="URL", help="REP address, e.g. tcp://0.0.0.0:7002")
    cell.add_argument("--retention-events", type=_positive_int, default=100_000,
                      metavar="N", help="outbox events kept for replay (100000)")
    cell.add_argument("--api-db", metavar="PATH",
                      help="Nova's API database (SQLite) beside the cell database: server "
                           "groups and request specs are read there (install its outbox "
                           "with cell init --flavors so that its changes reach the servers)")
    cell.add_argument("--service-down-time", type=float, default=None, metavar="SECONDS",
                      help="Nova's liveness rule for host_status: a compute service without "
                           "a heartbeat for this long is UNKNOWN (nova.conf's "
                           "service_down_time, 60 in Nova); 0: off, a service row counts "
                           "as up. Default: 60 with --source, 0 with --db")
    cell.add_argument("--neutron-url", metavar="URL",
                      help="Neutron's API: servers' security group names are asked there "
                           "(as Nova shows them) and re-checked every few seconds; without "
                           "it they come from the cell database")
    cell.add_argument("--neutron-token-file", metavar="FILE",
                      help="a file holding the token sent to Neutron (X-Auth-Token)")
    cell.add_argument("--nova-conf", metavar="FILE",
                      help="Nova's nova.conf: its [quota] defaults (instances, cores, ram, "
                           "metadata_items, key_pairs, server_groups, ...) are every "
                           "project's limits under the default quota class, as in Nova "
                           "(the publisher of Nova's API database); without it, Nova's "
                           "option defaults")
    cell.add_argument("--key-file", metavar="FILE",
                      help="seal the feed and control replies with this key file (appliance "
                           "keygen; the appliance's [[cell]] key_file is the same file); "
                           "without it the feed and control are not authenticated")
    cell.add_argument("--authenticate-only", action="store_true",
                      help="with --key-file: authenticate, do not encrypt (the feed and "
                           "replies stay readable on the wire)")
    cell_sub = cell.add_subparsers(dest="cell_command", metavar="SUBCOMMAND")
    init = cell_sub.add_parser("init", help="create a cell database (or a flavor source), "
                                            "or install the outbox into an existing one",
                               **_help("Install the outbox, its triggers and a fresh epoch. "
                                       "A new database first gets the cell schema (or the "
                                       "flavor tables, seeded with demo flavors); an "
                                       "existing one (Nova's) gets only the outbox.",
                                       "  appliance cell init --db cell1.db --name cell1\n"
                                       "  appliance cell init --db api.db --name flavors "
                                       "--flavors"))
    init.add_argument("--db", metavar="PATH", required=True)
    init.add_argument("--name", required=True)
    init.add_argument("--flavors", action="store_true",
                      help="a flavor source (Nova API DB flavor tables); a new database "
                           "is seeded with demo flavors")
    populate = cell_sub.add_parser("populate", help="bulk-create servers in a cell database",
                                   **_help("Create servers as Nova's build would leave "
                                           "them (ACTIVE, with ports, metadata, flavor).",
                                           "  appliance cell populate --db cell1.db "
                                           "--servers 1000 --projects 10"))
    populate.add_argument("--db", metavar="PATH", required=True)
    populate.add_argument("--servers", type=_count, required=True)
    populate.add_argument("--projects", type=_positive_int, default=10)
    populate.add_argument("--seed", type=int, default=0)
    simulate = cell_sub.add_parser("simulate", help="drive Nova lifecycle churn into a "
                                                    "cell database",
                                   **_help("Build, resize, stop, delete, change metadata "
                                           "and addresses at a chosen rate.",
                                           "  appliance cell simulate --db cell1.db --rate 20 "
                                           "--servers 1000 --projects 10 --duration 60\n"
                                           "  appliance cell simulate --db cell1.db --rate 0 "
                                           "--servers 100 --projects 5 --ops 500 --seed 7"))
    simulate.add_argument("--db", metavar="PATH", required=True)
    simulate.add_argument("--rate", type=_rate, required=True,
                          help="operations per second (0: as fast as possible)")
    simulate.add_argument("--servers", type=_count, required=True,
                          help="servers the churn keeps around")
    simulate.add_argument("--projects", type=_positive_int, required=True)
    until = simulate.add_mutually_exclusive_group()
    until.add_argument("--duration", type=_rate, metavar="S", help="stop after S seconds")
    until.add_argument("--ops", type=_count, metavar="N", help="stop after N operations")
    simulate.add_argument("--seed", type=int, default=None)

    status = sub.add_parser("status", help="per-cell freshness and the processes",
                            **_help("Ask the admin listener for each cell's state, position "
                                    "and lag, and the supervised processes.",
                                    "  appliance status\n"
                                    "  appliance status --json | jq '.cells[].lag_ms'\n"
                                    "  appliance status --admin-url http://10.20.0.10:8775 "
                                    "--token $TOKEN"))
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    _admin_options(status)

    resync = sub.add_parser("resync", help="re-copy one cell (or all) from a snapshot",
                            **_help("Start a resync job and show its progress until it ends. "
                                    "Readers keep the old rows until one commit swaps them.",
                                    "  appliance resync\n"
                                    "  appliance resync --cell cell1"))
    resync.add_argument("--cell", metavar="NAME", help="only this cell (default: all)")
    resync.add_argument("--json", action="store_true", help="print the finished job as JSON")
    _admin_options(resync)

    verify = sub.add_parser("verify", help="check the replica against the cells (drift)",
                            **_help("Compare digests of the cells and the replica, list the "
                                    "entities that differ; exit 1 if drift remains.",
                                    "  appliance verify\n"
                                    "  appliance verify --cell cell2 --repair"))
    verify.add_argument("--cell", metavar="NAME", help="only this cell (default: all)")
    verify.add_argument("--repair", action="store_true", help="repair what differs")
    verify.add_argument("--json", action="store_true", help="print the finished job as JSON")
    _admin_options(verify)

    keygen = sub.add_parser(
        "keygen", help="make a feed key file (or change its keys, to rotate)",
        **_help("Write a new key file (mode 0600) for a cell's feed and control: the same "
                "file goes to the cell's publisher (appliance cell --key-file) and to the "
                "appliance ([[cell]] key_file). The first key seals, every key opens. "
                "Rotation, copying the file to both sides after each step: --add a key (it "
                "opens, does not seal yet); --promote it (it seals); --remove the old one. "
                "Both sides see a changed file within seconds. See "
                "docs/feed-authentication.md.",
                "  appliance keygen /etc/appliance/cell1.key\n"
                "  appliance keygen --add /etc/appliance/cell1.key\n"
                "  appliance keygen --promote k20261205-3f9a1c /etc/appliance/cell1.key\n"
                "  appliance keygen --remove k20250601-77d0e2 /etc/appliance/cell1.key"))
    keygen.add_argument("path", metavar="FILE", help="the key file")
    change = keygen.add_mutually_exclusive_group()
    change.add_argument("--add", action="store_true",
                        help="add a new key to an existing file, after its keys (it opens "
                             "messages; the first key still seals)")
    change.add_argument("--promote", metavar="KEY_ID",
                        help="move this key first: it seals from now on")
    change.add_argument("--remove", metavar="KEY_ID",
                        help="drop this key from the file (the last step of a rotation)")

    version = sub.add_parser("version", help="versions of the appliance and its parts",
                             **_help("The appliance's version and those of Python, SQLite, "
                                     "apsw, gevent, bottle, libnanomsg.",
                                     "  appliance version\n  appliance version --json"))
    version.add_argument("--json", action="store_true")

    completion = sub.add_parser(
        "completion", help="print a shell completion script (bash, zsh)",
        **_help("Print the completion script for a shell, generated from this command "
                "line's own options.",
                "  source <(appliance completion bash)              # this shell only\n"
                "  appliance completion bash > /etc/bash_completion.d/appliance\n"
                "  appliance completion zsh > \"${fpath[1]}/_appliance\""))
    completion.add_argument("shell", choices=("bash", "zsh"), help="bash or zsh")

    doc = sub.add_parser("config-doc", help="print docs/configuration.md (from the settings)",
                         **_help("The configuration reference, generated from the setting "
                                 "declarations.",
                                 "  appliance config-doc > docs/configuration.md\n"
                                 "  appliance config-doc --check docs/configuration.md"))
    doc.add_argument("--check", metavar="FILE",
                     help="exit 1 if FILE differs from what would be generated")
    return parser


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

def cmd_serve(args) -> int:
    from appliance.supervisor import StartError, Supervisor
    settings = load(args.config)
    if args.check:
        for name, value in settings.values.items():
            shown = "(set, not shown)" if name in SECRETS and value else repr(value)
            print(f"{name} = {shown}  ({settings.sources[name]})")
        for warning in exposure_warnings(settings):
            print(f"appliance serve: warning: {warning}", file=sys.stderr)
        problems = deployment_problems(settings)
        for problem in problems:
            print(f"appliance serve: error: {problem}", file=sys.stderr)
        if problems:
            return 2
        for line in check_files(settings):
            print(f"ok: {line}")
        for line in _hello_cells(settings) + _keystone_check(settings):
            print(line)
        return 0
    problems = key_file_problems(settings)
    for problem in problems:
        print(f"appliance serve: error: {problem}", file=sys.stderr)
    if problems:
        return 2
    logs.configure(settings.log_level, settings.log_format)
    for warning in exposure_warnings(settings):
        logs.warning("setting_exposes_data", detail=warning)
    try:
        return Supervisor(settings, config_path=args.config).run()
    except StartError as exc:
        print(f"appliance serve: error: {exc}", file=sys.stderr)
        return 1


CHECK_HELLO_TIMEOUT = 2.0


def _hello_cells(settings) -> list[str]:
    """Ask each cell's publisher for hello, as ingest does at start. A cell that does not
    answer is reported, not refused: serve starts and keeps trying."""
    from replica.ingest_control import Requester
    from replica.key_file import sealer_for
    lines = []
    for cell in settings.cells:
        sealer = sealer_for(cell.name, cell.key_file)
        requester = Requester(cell.control, CHECK_HELLO_TIMEOUT, sealer=sealer)
        sealed = (f", sealed (key {sealer.keys().sealing_id})" if sealer else
                  ", not authenticated (no key_file)")
        try:
            hello = requester.request("hello")
            lines.append(f"ok: cell {cell.name} answers at {cell.control}: "
                         f"epoch {hello.get('epoch')}, head seq {hello.get('head')}{sealed}")
        except Exception as exc:  # any failure is what the operator needs to see
            lines.append(f"warning: cell {cell.name} does not answer at {cell.control} "
                         f"now ({exc or type(exc).__name__}); serve will keep trying")
        finally:
            requester.close()
    return lines


def _keystone_check(settings) -> list[str]:
    """With auth = keystone: get the service token as the workers will (reported, not
    refused: serve starts, and serves cached tokens, while Keystone is away)."""
    if settings.auth != "keystone":
        return []
    from appliance.api.keystone import KeystoneAuth, KeystoneUnavailable
    from appliance.worker import keystone_config
    auth = KeystoneAuth(keystone_config(settings))
    try:
        auth.service_token()
        return [f"ok: keystone {settings.keystone_url} accepts {settings.keystone_user} "
                f"(project {settings.keystone_project})"]
    except KeystoneUnavailable as exc:
        return [f"warning: keystone: {exc}; serve will keep trying"]


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum, frame):
        # Ignore further signals first: one arriving inside Event.set() would run a
        # nested handler that waits forever on the lock this one holds.
        for other in (signal.SIGTERM, signal.SIGINT):
            signal.signal(other, signal.SIG_IGN)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
    return stop


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip() or None


def cmd_keygen(args, parser) -> int:
    from replica.key_file import (KeyFileError, add_key, promote_key, remove_key,
                                  write_new_key_file)
    try:
        if args.remove:
            remove_key(args.path, args.remove)
            done = f"removed key {args.remove} from {args.path}"
        elif args.promote:
            promote_key(args.path, args.promote)
            done = f"key {args.promote} of {args.path} seals from now on"
        elif args.add:
            done = (f"added key {add_key(args.path)} to {args.path} (it opens; the first "
                    "key still seals)")
        else:
            key_id = write_new_key_file(args.path)
            print(f"wrote {args.path} (key {key_id}, mode 0600); give the same file to the "
                  "cell (appliance cell --key-file) and the appliance ([[cell]] key_file)")
            return 0
        print(f"{done}; copy the file to the cell and the appliance")
    except FileExistsError:
        print(f"appliance keygen: error: {args.path} exists; use --add to add a key to it",
              file=sys.stderr)
        return 2
    except KeyFileError as exc:
        print(f"appliance keygen: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"appliance keygen: error: {args.path}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


def cmd_cell(args, parser) -> int:
    which = args.cell_command
    if which is None:
        if args.db is not None and args.source is not None:
            parser.error("cell: --db (a SQLite cell) or --source (MariaDB/MySQL), not both")
        missing = (["--db (or --source)"] if args.db is None and args.source is None else [])
        missing += [f"--{n}" for n in ("name", "feed", "control") if getattr(args, n) is None]
        if args.source is not None and args.state_dir is None:
            missing.append("--state-dir")
        if missing:
            parser.error(f"cell: missing {', '.join(missing)} (or use init, populate, "
                         "simulate)")
        if args.db is not None and (args.api_source or args.password_file or args.state_dir
                                    or args.flavors):
            parser.error("cell: --api-source, --password-file, --state-dir and --flavors "
                         "go with --source (a SQLite cell's kinds come from its tables)")
        if args.source is not None and args.api_db:
            parser.error("cell: --api-db goes with --db; with --source, Nova's API database "
                         "is --api-source")
        from replica.cell.publisher import PublisherConfig, run_publisher
        from replica.key_file import KeyFileError, read_key_file
        from appliance.settings import ipc_path_problem
        for flag in ("feed", "control"):
            problem = ipc_path_problem(getattr(args, flag))
            if problem is not None:
                print(f"appliance cell: error: --{flag} {problem}", file=sys.stderr)
                return 2
        if args.authenticate_only and not args.key_file:
            parser.error("cell: --authenticate-only goes with --key-file")
        if args.key_file:
            try:
                read_key_file(args.key_file)
            except KeyFileError as exc:
                print(f"appliance cell: error: {exc}", file=sys.stderr)
                return 2
        else:
            print("appliance cell: warning: no --key-file: the feed and control are not "
                  "authenticated (anyone who reaches them can read the cell)", file=sys.stderr)
        quota_defaults = None
        if args.nova_conf:
            from replica.cell.nova_conf import NovaConfError, quota_defaults as read_defaults
            try:
                quota_defaults = tuple(sorted(read_defaults(args.nova_conf).items()))
            except NovaConfError as exc:
                print(f"appliance cell: error: {exc}", file=sys.stderr)
                return 2
        source = label = None
        if args.source is not None:
            from replica.cell import mysql
            from replica.cell.mysql_source import make_source
            try:
                source = make_source(args.source, args.api_source, args.name, args.state_dir,
                                     args.password_file, flavors=args.flavors,
                                     service_down_time=args.service_down_time,
                                     neutron_url=args.neutron_url,
                                     neutron_token=_read_token(args.neutron_token_file),
                                     quota_defaults=quota_defaults)
            except (mysql.SourceConfigError, OSError) as exc:
                print(f"appliance cell: error: {exc}", file=sys.stderr)
                return 2
            label = source.cell_url.redacted()
        config = PublisherConfig(db=args.db or label, name=args.name, feed_url=args.feed,
                                 control_url=args.control,
                                 retention_events=args.retention_events,
                                 api_db=args.api_db,
                                 service_down_time=args.service_down_time or 0.0,
                                 neutron_url=args.neutron_url,
                                 neutron_token=_read_token(args.neutron_token_file),
                                 quota_defaults=quota_defaults,
                                 source=source, key_file=args.key_file,
                                 encrypt=not args.authenticate_only)
        try:
            run_publisher(config, stop=_stop_on_signals())
        except Exception as exc:
            if source is None:
                raise
            import pymysql
            from replica.cell.mysql import SourceConfigError
            if isinstance(exc, SourceConfigError):
                print(f"appliance cell: error: {exc}", file=sys.stderr)
                return 2
            if isinstance(exc, pymysql.err.MySQLError):     # at start: the server is down
                print(f"appliance cell: error: {label}: {exc}", file=sys.stderr)
                return 1
            raise
        return 0
    if which == "init":
        from replica.cell.outbox import init_cell_db
        new = not os.path.exists(args.db)
        try:
            epoch = init_cell_db(args.db, args.name, flavors=args.flavors)
        except LookupError as exc:
            print(f"appliance cell init: error: {exc}", file=sys.stderr)
            return 1
        if args.flavors and new:       # an existing database is never written to
            from replica.cell.simulator import seed_flavors
            seed_flavors(args.db)
        print(f"{args.db}: cell {args.name}, epoch {epoch}")
        return 0
    if which == "populate":
        from replica.cell.simulator import populate
        bar = ProgressBar(f"populate {os.path.basename(args.db)}")
        populate(args.db, args.servers, args.projects, seed=args.seed,
                 progress=lambda done, total: bar.show(done, total))
        bar.finish()
        print(f"{args.db}: {args.servers} servers in {args.projects} projects")
        return 0
    from replica.cell.simulator import SimulatorConfig, run_simulator
    config = SimulatorConfig(db=args.db, rate=args.rate, servers=args.servers,
                             projects=args.projects, duration=args.duration, ops=args.ops,
                             seed=args.seed)
    run_simulator(config, stop=_stop_on_signals())
    return 0


def _admin_client(args):
    from appliance.admin import AdminClient
    url, token, cafile = args.admin_url, args.token, None
    if args.config:
        settings = load(args.config)
        url = url or settings.admin_url
        token = token or settings.admin_token or None
        cafile = settings.tls_cert_file or None
    return AdminClient(url or DEFAULT_ADMIN_URL,
                       token or os.environ.get("APPLIANCE_ADMIN_TOKEN") or None,
                       cafile=cafile)


def _when(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
    return str(value).replace("T", " ")[:19]


def _num(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


# A backlog ingest's own checkpoints leave in passing is not worth a line (see
# replica.store.connection.WAL_RESTART_BYTES); a first load's or a big resync's is.
WAL_BACKLOG_SHOWN_BYTES = 64 << 20


def format_status(status: dict) -> str:
    out = []
    cells = status.get("cells") or []
    if status.get("ingest_error"):
        out.append(f"ingest: {status['ingest_error']}")
    ingest = status.get("ingest") or {}
    if ingest.get("store_failing_since"):
        what = "disk full" if ingest.get("disk_full") else "commits failing"
        out.append(f"replica store: {what} since {_when(ingest['store_failing_since'])}, "
                   f"writes held ({ingest.get('store_error')})")
    backlog = ingest.get("wal_backlog_bytes") or 0
    if backlog > WAL_BACKLOG_SHOWN_BYTES:
        out.append(f"replica store: {backlog / 2**20:,.0f} MiB of the write-ahead log not "
                   "copied back into the replica file yet (reads are slower until it is)")
    out.append(table(
        ["CELL", "STATE", "SINCE", "EPOCH", "SEQ", "HEAD", "LAG MS", "LAG EV", "SERVERS",
         "DELETED", "FLAVORS", "LAST EVENT", "DEAD"],
        [[str(c.get("cell")), str(c.get("state")), _when(c.get("state_since")),
          str(c.get("epoch") or "-")[:8], _num(c.get("seq")), _num(c.get("head")),
          _num(c.get("lag_ms")), _num(c.get("lag_events")), *_server_counts(c),
          _num(c.get("flavors") or None), _when(c.get("last_event_at")),
          _num(c.get("dead_letters"))]
         for c in cells]))
    if cells:
        out.append("SERVERS: live servers; DELETED: soft-deleted servers the replica keeps "
                   "(changes-since shows them); FLAVORS: a flavor source's flavors")
    for c in cells:
        if c.get("error"):
            out.append(f"  {c.get('cell')}: {c['error']}")
        if c.get("state") == "resyncing" and c.get("resync_reason"):
            out.append(f"  {c.get('cell')}: resyncing ({c['resync_reason']})")
        if c.get("auth") == "none":
            out.append(f"  {c.get('cell')}: auth: none (feed and control not authenticated; "
                       "see docs/feed-authentication.md)")
    processes = status.get("processes") or []
    out.append("")
    out.append(table(["PROCESS", "ROLE", "PID", "STATE", "RESTARTS", "STARTED"],
                     [[str(p.get("name")), str(p.get("role")), str(p.get("pid")),
                       str(p.get("state")), str(p.get("restarts")), _when(p.get("started"))]
                      for p in processes]))
    return "\n".join(out)


def _server_counts(cell: dict) -> tuple[str, str]:
    """(live, soft-deleted) servers of a cell; "-" for a flavor source."""
    if not cell.get("servers") and cell.get("flavors"):
        return "-", "-"
    if "servers_live" in cell:
        return _num(cell["servers_live"]), _num(cell["servers_deleted"])
    return _num(cell.get("servers")), "?"   # the replica could not be counted


class ProgressBar:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str):
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last = None
        self.last_tenth = -1

    def show(self, done: int, total: int, note: str = "") -> None:
        if total:
            share = min(done / total, 1.0)
            tenth = int(share * 10)
            if not self.tty and tenth == self.last_tenth and share < 1.0:
                return  # a log file gets one line per tenth, not one per poll
            self.last_tenth = tenth
            filled = int(share * PROGRESS_WIDTH)
            text = (f"{self.label} [{'#' * filled}{'.' * (PROGRESS_WIDTH - filled)}] "
                    f"{share * 100:5.1f}% {done}/{total} {note}").rstrip()
        else:
            text = f"{self.label} ... {note}".rstrip()
        if text == self.last:
            return
        self.last = text
        sys.stderr.write(("\r" + text + "\x1b[K") if self.tty else text + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.tty and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()


def cmd_status(args) -> int:
    status = _admin_client(args).status()
    print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))
    return 0


def _follow(client, job: dict, label: str) -> dict:
    bar = ProgressBar(label)
    try:
        return client.wait_job(job["id"], progress=lambda j: bar.show(
            j.get("done") or 0, j.get("total") or 0, j.get("state", "")))
    finally:
        bar.finish()


def cmd_resync(args) -> int:
    client = _admin_client(args)
    job = client.resync(args.cell)
    job = _follow(client, job, f"resync {args.cell or 'all cells'}")
    if args.json:
        print(json.dumps(job, indent=2, default=str))
    if job.get("state") != "done":
        print(f"appliance resync: failed: {job.get('error') or job.get('state')}",
              file=sys.stderr)
        return 1
    if not args.json:
        took = (job.get("finished_at") or 0) - (job.get("started_at") or 0)
        print(f"resync of {', '.join(job.get('cells') or []) or 'all cells'} done "
              f"in {took:.1f}s")
    return 0


def cmd_verify(args) -> int:
    client = _admin_client(args)
    job = client.verify(args.cell, args.repair)
    job = _follow(client, job, f"verify {args.cell or 'all cells'}")
    if job.get("state") != "done":
        print(f"appliance verify: failed: {job.get('error') or job.get('state')}",
              file=sys.stderr)
        return 1
    cells = (job.get("result") or {}).get("cells") or {}
    if args.json:
        print(json.dumps(job, indent=2, default=str))
    rows, remaining = [], 0
    for name, found in sorted(cells.items()):
        differing = found.get("differing") or []
        repaired = found.get("repaired") or 0
        if len(differing) > repaired:
            remaining += len(differing) - repaired
        for key in differing:
            rows.append([name, str(key), "repaired" if args.repair else "differs"])
    if not args.json:
        if rows:
            print(table(["CELL", "ENTITY", "RESULT"], rows))
        summary = ", ".join(f"{n}: {len(f.get('differing') or [])} differing, "
                            f"{f.get('repaired') or 0} repaired"
                            for n, f in sorted(cells.items()))
        print(summary or "no cells verified")
    return 1 if remaining else 0


def cmd_version(args) -> int:
    from appliance import about
    found = about.versions()
    print(json.dumps(found, indent=2) if args.json else about.format_versions(found))
    return 0


def cmd_config_doc(args) -> int:
    text = render_docs()
    if not args.check:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.check) as f:
            current = f.read()
    except OSError as exc:
        print(f"appliance config-doc: {args.check}: {exc.strerror}", file=sys.stderr)
        return 1
    if current != text:
        print(f"appliance config-doc: {args.check} is out of date; regenerate it with "
              f"'appliance config-doc > {args.check}'", file=sys.stderr)
        return 1
    return 0


def _exit_on_sigterm(signum, frame):
    # Until a command installs its own handling (the supervisor, the cell publisher):
    # SIGTERM unwinds like Ctrl-C does, so a demo in its setup removes what it made.
    raise SystemExit(128 + signum)


def _output_closed() -> int:
    """The reader of our output went away (``appliance status | head -1``): stop quietly,
    with the status a shell gives a program ended by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())   # what is still buffered goes nowhere
        except (OSError, ValueError):
            pass
    os.close(devnull)
    return EXIT_OUTPUT_CLOSED


def main(argv: list[str] | None = None) -> int:
    from appliance import children
    try:
        # The one-file binary: stop (gracefully) when the launcher dies, even by SIGKILL.
        children.follow_launcher()
    except children.LauncherGone as exc:
        print(f"appliance: {exc}; not starting", file=sys.stderr)
        children.remove_orphaned_bundle()
        return 1
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        code = _run(argv)
        sys.stdout.flush()      # here, where a closed pipe can still be told apart
        return code
    except BrokenPipeError:
        return _output_closed()
    finally:
        # The launcher removes the unpacked directory after the program exits; if it
        # died (SIGKILL), that is left to the program, as the last thing it does.
        children.remove_orphaned_bundle()


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from appliance.admin import AdminError
    try:
        if args.command == "demo":
            from appliance import demo
            return demo.run(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "cell":
            return cmd_cell(args, parser)
        if args.command == "keygen":
            return cmd_keygen(args, parser)
        if args.command == "completion":
            from appliance.completion import SHELLS
            sys.stdout.write(SHELLS[args.shell](parser))
            return 0
        handler = {"status": cmd_status, "resync": cmd_resync, "verify": cmd_verify,
                   "version": cmd_version, "config-doc": cmd_config_doc}[args.command]
        return handler(args)
    except SettingsError as exc:
        print(f"appliance {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except AdminError as exc:
        print(f"appliance {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
