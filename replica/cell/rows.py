"""Nova-shaped values for simulated cells: default flavors, images, Flavor and
RequestSpec primitives, network info caches, timestamps, as Nova stores them."""

from __future__ import annotations

import datetime
import json
import random
from dataclasses import dataclass, field

# Nova's power_state values.
NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED = 0, 1, 3, 4, 6, 7


@dataclass(frozen=True)
class FlavorSpec:
    id: int
    flavorid: str
    name: str
    memory_mb: int
    vcpus: int
    root_gb: int
    ephemeral_gb: int = 0
    swap: int = 0
    extra_specs: dict = field(default_factory=dict)
    is_public: bool = True
    projects: tuple = ()
    description: str | None = None


# Nova's classic defaults (ids "1".."5") plus flavors with extra specs and a private one.
FLAVORS: tuple[FlavorSpec, ...] = (
    FlavorSpec(1, "1", "m1.tiny", 512, 1, 1),
    FlavorSpec(2, "2", "m1.small", 2048, 1, 20),
    FlavorSpec(3, "3", "m1.medium", 4096, 2, 40),
    FlavorSpec(4, "4", "m1.large", 8192, 4, 80),
    FlavorSpec(5, "5", "m1.xlarge", 16384, 8, 160),
    FlavorSpec(6, "6", "c1.dedicated", 8192, 4, 40,
               extra_specs={"hw:cpu_policy": "dedicated", "hw:mem_page_size": "large"},
               description="Pinned CPUs and huge pages"),
    FlavorSpec(7, "7", "g1.vgpu", 16384, 8, 80, ephemeral_gb=20, swap=1024,
               extra_specs={"resources:VGPU": "1", "trait:CUSTOM_GPU": "required"}),
    FlavorSpec(8, "8", "p1.private", 4096, 2, 40, is_public=False, projects=("demo",),
               description="Private to the demo project"),
)
FLAVOR_CREATED = "2026-01-01 00:00:00.000000"

# Glance images a simulated cell boots from: (uuid, name, disk_format, min_disk, min_ram, os_distro)
IMAGES = (
    ("70a599e0-31e7-49b7-b260-868f441e862b", "cirros-0.6.2-x86_64-disk", "qcow2", 0, 0, None),
    ("a2459075-d96c-40d5-893e-577ff92e721c", "ubuntu-24.04-server", "qcow2", 10, 512, "ubuntu"),
    ("c6d4a4e1-6f2b-4c5a-9c77-0b9b7e2f3a10", "debian-12-generic", "qcow2", 8, 512, "debian"),
    ("155d900f-4e14-4e4c-a73d-069cbf4541e6", "fedora-40-cloud", "raw", 5, 1024, "fedora"),
    ("e0b1c8e5-5a2b-4bde-8b5c-0e3c9d9f4a77", "windows-server-2022", "qcow2", 40, 4096, "windows"),
)

NETWORKS = (
    # (uuid, label, v4 cidr prefix, v6 prefix or None)
    ("3cb9bc59-5699-4588-a4b1-b87f96708bc6", "private", "10.0", "fd00:10::"),
    ("a3f2b1c4-0d5e-4f6a-8b7c-9d0e1f2a3b4c", "shared", "192.168", None),
)
FLOATING_PREFIX = "172.24.4."
KEY_DATA = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm0rGzNbvKTl9nGm8l1g3W5cK1tpT0e1Xwq2p"
            "8gE1xY demo@workstation")


def now() -> str:
    """The current UTC time as Nova's DB stores it."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def primitive_time(stored: str | None) -> str | None:
    """A stored datetime as it appears inside a serialized Nova object."""
    if stored is None:
        return None
    return stored.replace(" ", "T").split(".")[0] + "Z"


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_uuid(rng: random.Random) -> str:
    """A version-4 uuid drawn from ``rng`` (deterministic for a seed)."""
    n = (rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def project_ids(projects: int, seed: int | None) -> list[str]:
    """The first project is "demo"; the others are 32-hex ids derived from the seed."""
    rng = random.Random(f"projects-{seed or 0}")
    return ["demo"] + [f"{rng.getrandbits(128):032x}" for _ in range(max(0, projects - 1))]


def user_ids(project: str) -> list[str]:
    rng = random.Random(f"users-{project}")
    return [f"{rng.getrandbits(128):032x}" for _ in range(3)]


def flavor_primitive(flavor: FlavorSpec) -> dict:
    """A Flavor object as Nova serializes it into instance_extra.flavor."""
    return {
        "nova_object.name": "Flavor",
        "nova_object.namespace": "nova",
        "nova_object.version": "1.2",
        "nova_object.data": {
            "id": flavor.id, "name": flavor.name, "memory_mb": flavor.memory_mb,
            "vcpus": flavor.vcpus, "root_gb": flavor.root_gb,
            "ephemeral_gb": flavor.ephemeral_gb, "flavorid": flavor.flavorid,
            "swap": flavor.swap, "rxtx_factor": 1.0, "vcpu_weight": 0, "disabled": False,
            "is_public": flavor.is_public, "extra_specs": dict(flavor.extra_specs),
            "description": flavor.description, "created_at": primitive_time(FLAVOR_CREATED),
            "updated_at": None, "deleted_at": None, "deleted": False,
        },
        "nova_object.changes": ["extra_specs"],
    }


def extra_flavor(cur: FlavorSpec, old: FlavorSpec | None = None,
                 new: FlavorSpec | None = None) -> str:
    return json.dumps({"cur": flavor_primitive(cur),
                       "old": flavor_primitive(old) if old else None,
                       "new": flavor_primitive(new) if new else None})


def trusted_certs(ids: list[str]) -> str:
    return json.dumps({"nova_object.name": "TrustedCerts", "nova_object.namespace": "nova",
                       "nova_object.version": "1.0", "nova_object.data": {"ids": ids},
                       "nova_object.changes": ["ids"]})


_FLAVOR_JSON: dict[str, str] = {}


def request_spec(instance_uuid: str, project: str, flavor: FlavorSpec, image: str,
                 az: str | None, hints: dict) -> str:
    """A RequestSpec primitive, trimmed to the fields the API reads back. The
    embedded Flavor is encoded once per flavor (bulk loads write thousands)."""
    flavor_json = _FLAVOR_JSON.get(flavor.flavorid)
    if flavor_json is None:
        flavor_json = _FLAVOR_JSON[flavor.flavorid] = json.dumps(flavor_primitive(flavor))
    data = json.dumps({
        "instance_uuid": instance_uuid, "project_id": project, "num_instances": 1,
        "image": {"nova_object.name": "ImageMeta", "nova_object.data": {"id": image}},
        "availability_zone": az, "scheduler_hints": hints, "is_bfv": not image,
    })
    return ('{"nova_object.name": "RequestSpec", "nova_object.namespace": "nova", '
            '"nova_object.version": "1.14", "nova_object.data": '
            f'{data[:-1]}, "flavor": {flavor_json}}}}}')


def mac(rng: random.Random) -> str:
    return "fa:16:3e:%02x:%02x:%02x" % (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _subnet(cidr: str, gateway: str, version: int, ips: list[dict]) -> dict:
    return {"cidr": cidr, "dns": [],
            "gateway": {"address": gateway, "type": "gateway", "version": version, "meta": {}},
            "ips": ips, "routes": [], "version": version, "meta": {"enable_dhcp": True}}


def _vif_values(rng: random.Random, network_index: int) -> tuple[str, str, str, str | None]:
    """Port id, MAC, IPv4 and IPv6 addresses of a new port (the draws, in order)."""
    _net_id, _label, v4, v6 = NETWORKS[network_index]
    port = new_uuid(rng)
    v4_address = f"{v4}.{rng.randrange(0, 255)}.{rng.randrange(2, 254)}"
    address = mac(rng)
    v6_address = (f"{v6}{rng.randrange(1, 1 << 16):x}:{rng.randrange(1, 1 << 16):x}"
                  if v6 else None)
    return port, address, v4_address, v6_address


def _vif_dict(port: str, address: str, v4_address: str, v6_address: str | None, project: str,
              network_index: int, floating: str | None, devname: str) -> dict:
    net_id, label, v4, v6 = NETWORKS[network_index]
    floating_ips = ([{"address": floating, "type": "floating", "version": 4, "meta": {}}]
                    if floating else [])
    subnets = [_subnet(f"{v4}.0.0/16", f"{v4}.0.1", 4,
                       [{"address": v4_address, "type": "fixed", "version": 4, "meta": {},
                         "floating_ips": floating_ips}])]
    if v6:
        subnets.append(_subnet(f"{v6}/64", f"{v6}1", 6,
                               [{"address": v6_address, "type": "fixed", "version": 6,
                                 "meta": {}, "floating_ips": []}]))
    return {
        "id": port, "address": address,
        "network": {"id": net_id, "bridge": "br-int", "label": label, "subnets": subnets,
                    "meta": {"injected": False, "tenant_id": project, "mtu": 1442,
                             "physical_network": None, "tunneled": True}},
        "type": "ovs",
        "details": {"port_filter": True, "connectivity": "l2", "bridge_name": "br-int",
                    "datapath_type": "system", "ovs_hybrid_plug": False},
        "devname": devname, "ovs_interfaceid": port, "qbh_params": None,
        "qbg_params": None, "active": True, "vnic_type": "normal", "profile": {},
        "preserve_on_delete": False, "delegate_create": True, "meta": {},
    }


def vif(rng: random.Random, project: str, network_index: int = 0,
        floating: str | None = None) -> dict:
    """One VIF of a network info cache, as Nova's neutron integration stores it."""
    port, address, v4_address, v6_address = _vif_values(rng, network_index)
    return _vif_dict(port, address, v4_address, v6_address, project, network_index, floating,
                     f"tap{port[:11]}")


_VIF_TEMPLATES: dict[tuple[int, bool], str] = {}
_MARKS = ("@PORT@", "@MAC@", "@V4@", "@V6@", "@PROJECT@", "@FIP@", "@DEV@")


def vif_json(rng: random.Random, project: str, network_index: int = 0,
             floating: str | None = None) -> str:
    """``json.dumps(vif(...))`` for the same draws, filled into a cached template:
    bulk loads encode hundreds of thousands of these."""
    key = (network_index, floating is not None)
    template = _VIF_TEMPLATES.get(key)
    if template is None:
        template = json.dumps(_vif_dict(*_MARKS[:4], _MARKS[4], network_index,
                                        _MARKS[5] if floating else None, _MARKS[6]))
        _VIF_TEMPLATES[key] = template
    port, address, v4_address, v6_address = _vif_values(rng, network_index)
    for mark, value in zip(_MARKS, (port, address, v4_address, v6_address or "", project,
                                    floating or "", f"tap{port[:11]}")):
        template = template.replace(mark, value)
    return template


def floating_ip(rng: random.Random) -> str:
    return f"{FLOATING_PREFIX}{rng.randrange(2, 254)}"


def image_system_metadata(image: tuple, flavor: FlavorSpec) -> dict[str, str]:
    """The system metadata Nova writes at boot: image_* keys copied from the image."""
    image_id, _name, disk_format, min_disk, min_ram, distro = image
    meta = {
        "image_base_image_ref": image_id,
        "image_container_format": "bare",
        "image_disk_format": disk_format,
        "image_min_disk": str(max(min_disk, flavor.root_gb)),
        "image_min_ram": str(min_ram),
        "owner_project_name": "demo",
        "owner_user_name": "demo",
        "boot_roles": "member,reader",
    }
    if distro:
        meta["image_os_distro"] = distro
    return meta
