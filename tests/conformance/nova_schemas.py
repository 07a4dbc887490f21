"""Nova's own response-body JSON schemas, read from the installed ``nova`` distribution.

Nova validates every API response against the schemas in
``nova/api/openstack/compute/schemas/*.py``; its controllers attach them per microversion
range with ``@validation.response_body_schema(schema.X, min_version, max_version)``.

This module uses both without importing Nova's runtime (no config, database, RPC or
eventlet): it executes only the schema modules and the few modules they import
(``nova.api.validation.parameter_types``, ``response_types``, ``validators``,
``nova.exception``, ``nova.i18n``) from their files in the installed wheel, under a
temporary skeleton of ``nova.*`` package objects. ``nova.objects.*`` (which would pull in
oslo.versionedobjects and the database layer) is stood in for by modules whose attributes
are the literal constants of the real files, read with ``ast`` (e.g.
``nova.objects.instance.MAX_TAG_COUNT``). The microversion ranges are read from the
controllers' decorators with ``ast``, so nothing about Nova is restated here.

Nova is installed with ``pip install --no-deps nova==NOVA_VERSION`` (build/bootstrap.sh).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.metadata
import importlib.util
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

NOVA_VERSION = "34.0.0"

# Where each API resource's controller and method live in Nova's tree.
CONTROLLERS = {
    "servers": ("nova/api/openstack/compute/servers.py", "ServersController"),
    "flavors": ("nova/api/openstack/compute/flavors.py", "FlavorsController"),
    # GET / (the root version list) and GET /v2.1 (one version).
    "versions": ("nova/api/openstack/compute/versions.py", "Versions"),
    "versionsV21": ("nova/api/openstack/compute/versionsV21.py", "VersionsController"),
    # Sub-resources: GET /flavors/{id}/os-extra_specs[/{key}], /servers/{id}/metadata,
    # /ips, /tags (and one item of each).
    "flavors_extraspecs": ("nova/api/openstack/compute/flavors_extraspecs.py",
                           "FlavorExtraSpecsController"),
    "server_metadata": ("nova/api/openstack/compute/server_metadata.py",
                        "ServerMetadataController"),
    "ips": ("nova/api/openstack/compute/ips.py", "IPsController"),
    "server_tags": ("nova/api/openstack/compute/server_tags.py", "ServerTagsController"),
    # GET /servers/{id}/os-instance-actions[/{request_id}]
    "instance_actions": ("nova/api/openstack/compute/instance_actions.py",
                         "InstanceActionsController"),
    # GET /os-keypairs[/{name}]
    "keypairs": ("nova/api/openstack/compute/keypairs.py", "KeypairController"),
    # GET /limits
    "limits": ("nova/api/openstack/compute/limits.py", "LimitsController"),
    # GET /os-quota-sets/{project}[/detail|/defaults]
    "quota_sets": ("nova/api/openstack/compute/quota_sets.py", "QuotaSetsController"),
    # GET /os-availability-zone[/detail]
    "availability_zone": ("nova/api/openstack/compute/availability_zone.py",
                          "AvailabilityZoneController"),
    # GET /os-server-groups[/{id}]
    "server_groups": ("nova/api/openstack/compute/server_groups.py", "ServerGroupController"),
    # GET /os-hypervisors[/detail|/{id}], before 2.53 /{pattern}/search and /servers
    "hypervisors": ("nova/api/openstack/compute/hypervisors.py", "HypervisorsController"),
    # Admin reads: GET /flavors/{id}/os-flavor-access, /os-services, /os-aggregates[/{id}]
    "flavor_access": ("nova/api/openstack/compute/flavor_access.py",
                      "FlavorAccessController"),
    "services": ("nova/api/openstack/compute/services.py", "ServiceController"),
    "aggregates": ("nova/api/openstack/compute/aggregates.py", "AggregateController"),
}
SCHEMA_MODULES = {
    "servers": "nova.api.openstack.compute.schemas.servers",
    "flavors": "nova.api.openstack.compute.schemas.flavors",
    "versions": "nova.api.openstack.compute.schemas.versions",
    "versionsV21": "nova.api.openstack.compute.schemas.versions",
    "flavors_extraspecs": "nova.api.openstack.compute.schemas.flavors_extraspecs",
    "availability_zone": "nova.api.openstack.compute.schemas.availability_zone",
    "server_groups": "nova.api.openstack.compute.schemas.server_groups",
    "server_metadata": "nova.api.openstack.compute.schemas.server_metadata",
    "ips": "nova.api.openstack.compute.schemas.ips",
    "server_tags": "nova.api.openstack.compute.schemas.server_tags",
    "instance_actions": "nova.api.openstack.compute.schemas.instance_actions",
    "keypairs": "nova.api.openstack.compute.schemas.keypairs",
    "limits": "nova.api.openstack.compute.schemas.limits",
    "quota_sets": "nova.api.openstack.compute.schemas.quota_sets",
    "hypervisors": "nova.api.openstack.compute.schemas.hypervisors",
    "flavor_access": "nova.api.openstack.compute.schemas.flavor_access",
    "services": "nova.api.openstack.compute.schemas.services",
    "aggregates": "nova.api.openstack.compute.schemas.aggregates",
}
# The decorators that attach a schema to a method, per kind of schema.
RESPONSE = "response_body_schema"
QUERY = "query_schema"

# Modules executed from Nova's files, in dependency order.
_REAL = ["nova.i18n", "nova.exception", "nova.api.validation.parameter_types",
         "nova.api.validation.response_types", "nova.api.validation.validators",
         "nova.api.openstack.compute.schemas.servers",
         "nova.api.openstack.compute.schemas.flavors",
         "nova.api.openstack.compute.schemas.versions",
         "nova.api.openstack.compute.schemas.flavors_extraspecs",
         "nova.api.openstack.compute.schemas.server_metadata",
         "nova.api.openstack.compute.schemas.ips",
         "nova.api.openstack.compute.schemas.server_tags",
         "nova.api.openstack.compute.schemas.instance_actions",
         "nova.api.openstack.compute.schemas.keypairs",
         "nova.api.openstack.compute.schemas.limits",
         "nova.api.openstack.compute.schemas.quota_sets",
         "nova.api.openstack.compute.schemas.hypervisors",
         "nova.api.openstack.compute.schemas.flavor_access",
         "nova.api.openstack.compute.schemas.services",
         "nova.api.openstack.compute.schemas.aggregates",
         "nova.api.openstack.compute.schemas.availability_zone",
         "nova.api.openstack.compute.schemas.server_groups"]
# Modules whose literal top-level constants are all the schema modules need.
_CONSTANTS_ONLY = ["nova.objects.instance", "nova.objects.tag"]
_PACKAGES = ["nova", "nova.api", "nova.api.validation", "nova.api.openstack",
             "nova.api.openstack.compute", "nova.api.openstack.compute.schemas",
             "nova.objects"]


class NovaNotInstalled(RuntimeError):
    pass


def _distribution() -> importlib.metadata.Distribution:
    try:
        dist = importlib.metadata.distribution("nova")
    except importlib.metadata.PackageNotFoundError:
        raise NovaNotInstalled(
            f"nova {NOVA_VERSION} is not installed in this environment: run build/bootstrap.sh "
            f"(it runs: pip install --no-deps nova=={NOVA_VERSION})") from None
    if dist.version != NOVA_VERSION:
        raise NovaNotInstalled(f"nova {dist.version} is installed; these tests are pinned to "
                               f"nova {NOVA_VERSION} (run build/bootstrap.sh)")
    return dist


def source_path(relpath: str) -> Path:
    path = Path(_distribution().locate_file(relpath))
    if not path.is_file():
        raise NovaNotInstalled(f"{relpath} is missing from the installed nova distribution")
    return path


def _literal_constants(path: Path) -> dict[str, object]:
    """The module-level ``NAME = <literal>`` assignments of a Python file."""
    found = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return found


def _file_of(module: str) -> str:
    return module.replace(".", "/") + ".py"


@contextlib.contextmanager
def _nova_skeleton():
    """Temporarily make ``nova.*`` resolve to bare package objects, so that the modules
    executed below find each other in sys.modules and nothing else of Nova is imported."""
    saved = {name: mod for name, mod in sys.modules.items()
             if name == "nova" or name.startswith("nova.")}
    for name in saved:
        del sys.modules[name]
    try:
        for name in _PACKAGES:
            pkg = types.ModuleType(name)
            pkg.__path__ = []  # an unexpected submodule import fails loudly
            sys.modules[name] = pkg
            _attach(name, pkg)
        yield
    finally:
        for name in [n for n in sys.modules if n == "nova" or n.startswith("nova.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _attach(name: str, module: types.ModuleType) -> None:
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


@functools.cache
def modules() -> dict[str, types.ModuleType]:
    """Nova's schema modules (and the validators module), by dotted name."""
    loaded = {}
    # WebOb (imported by nova.exception) imports the deprecated ``cgi`` module.
    with _nova_skeleton(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in _CONSTANTS_ONLY:
            mod = types.ModuleType(name)
            mod.__dict__.update(_literal_constants(source_path(_file_of(name))))
            sys.modules[name] = mod
            _attach(name, mod)
        for name in _REAL:
            spec = importlib.util.spec_from_file_location(name, source_path(_file_of(name)))
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            _attach(name, mod)
            loaded[name] = mod
    return loaded


# ---------------------------------------------------------------------------
# Microversion ranges, from the controllers' decorators
# ---------------------------------------------------------------------------

Version = tuple[int, int]


def parse_version(text: str) -> Version:
    major, minor = text.split(".")
    return int(major), int(minor)


def format_version(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class Attached:
    """One ``@validation.response_body_schema(schema.<name>, min, max)`` (or
    ``query_schema``, the ``kind``)."""
    resource: str
    method: str
    schema_name: str
    min_version: Version | None   # None: unbounded
    max_version: Version | None
    kind: str = RESPONSE

    def matches(self, version: Version) -> bool:
        return ((self.min_version is None or self.min_version <= version)
                and (self.max_version is None or version <= self.max_version))

    @property
    def where(self) -> str:
        lo = format_version(self.min_version) if self.min_version else "*"
        hi = format_version(self.max_version) if self.max_version else "*"
        return (f"{CONTROLLERS[self.resource][1]}.{self.method} "
                f"schema.{self.schema_name} [{lo}, {hi}]")


@functools.cache
def attached(resource: str, method: str, kind: str = RESPONSE) -> tuple[Attached, ...]:
    relpath, class_name = CONTROLLERS[resource]
    tree = ast.parse(source_path(relpath).read_text())
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef) and cls.name == class_name:
            break
    else:
        raise LookupError(f"class {class_name} not found in {relpath}")
    for fn in cls.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == method:
            break
    else:
        raise LookupError(f"{class_name}.{method} not found in {relpath}")
    found = []
    for deco in fn.decorator_list:
        if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                and deco.func.attr == kind):
            continue
        schema_ref = deco.args[0]
        assert isinstance(schema_ref, ast.Attribute), ast.dump(schema_ref)
        bounds = [ast.literal_eval(a) for a in deco.args[1:]]
        bounds += [None] * (2 - len(bounds))
        found.append(Attached(resource, method, schema_ref.attr,
                              parse_version(bounds[0]) if bounds[0] else None,
                              parse_version(bounds[1]) if bounds[1] else None, kind))
    if not found:
        raise LookupError(f"{class_name}.{method} has no {kind}")
    return tuple(sorted(found, key=lambda a: a.min_version or (0, 0)))


def schema_for(resource: str, method: str, version: Version,
               kind: str = RESPONSE) -> tuple[Attached, dict]:
    """The schema Nova validates ``resource.method``'s response body (or query string,
    ``kind=QUERY``) with at ``version``."""
    matching = [a for a in attached(resource, method, kind) if a.matches(version)]
    if len(matching) != 1:
        raise LookupError(f"{len(matching)} {kind}s of {resource}.{method} match "
                          f"{format_version(version)}")
    (which,) = matching
    module = modules()[SCHEMA_MODULES[resource]]
    return which, getattr(module, which.schema_name)


def boundaries(endpoints, low: Version, high: Version, kind: str = RESPONSE) -> list[Version]:
    """Every version in [low, high] where one of ``endpoints``' (resource, method) schemas
    starts or ends, plus ``low`` and ``high``."""
    versions = {low, high}
    for resource, method in endpoints:
        for a in attached(resource, method, kind):
            for v in (a.min_version, a.max_version):
                if v is not None and low <= v <= high:
                    versions.add(v)
    return sorted(versions)


def validator(schema: dict):
    """Nova's validator for ``schema`` (see ``_new_validator``), built once per schema."""
    key = id(schema)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = (schema, _new_validator(schema))
    return _VALIDATORS[key][1]


_VALIDATORS: dict[int, tuple] = {}


def _new_validator(schema: dict):
    """Nova's own validator for ``schema`` (Draft 2020-12 extended with Nova's format
    checker: date-time, uuid, uri, cidr, ...), strict about additional properties as
    Nova's response validation is. Use ``.iter_errors(body)``."""
    return modules()["nova.api.validation.validators"]._SchemaValidator(schema).validator


def violations(schema: dict, body) -> list[str]:
    """Every way ``body`` breaks ``schema``, one line each: JSON path, message, value."""
    lines = []
    errors = sorted(validator(schema).iter_errors(body), key=lambda e: list(map(str, e.path)))
    for err, note in _leaves(errors):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                             for p in err.absolute_path)
        schema_path = "/".join(map(str, err.absolute_schema_path))
        value = repr(err.instance)
        if len(value) > 160:
            value = value[:160] + "..."
        lines.append(f"{path}: {err.message[:300]} (schema: {schema_path}{note}; "
                     f"value: {value})")
    return lines


def _leaves(errors, note=""):
    """The errors that say what is wrong: a failed oneOf/anyOf is replaced by the errors
    of its closest branch (the one with the fewest errors; Nova's 2.69+ server schemas
    are oneOf [full server, server of a down cell])."""
    for err in errors:
        if err.validator in ("oneOf", "anyOf") and err.context:
            branches: dict[int, list] = {}
            for sub in err.context:
                branches.setdefault(sub.schema_path[0], []).append(sub)
            if len(branches) == 0:
                yield err, note
                continue
            best = min(branches, key=lambda b: len(branches[b]))
            yield from _leaves(branches[best], f"{note}; closest {err.validator} branch "
                                               f"#{best} of {len(err.validator_value)}")
        else:
            yield err, note


def query_error(schema: dict, params: dict[str, list[str]]) -> str | None:
    """The message of the 400 Nova answers when ``params`` (name -> values, as webob's
    ``GET.dict_of_lists()``) break query ``schema``, or None when they pass. Nova
    validates a query string with additionalProperties enforced as written (its soft
    check is for the legacy v2 API only)."""
    validators = modules()["nova.api.validation.validators"]
    validation_error = modules()["nova.exception"].ValidationError
    try:
        validators._SchemaValidator(schema, False, is_body=False).validate(params)
    except validation_error as exc:
        return exc.format_message()
    return None
