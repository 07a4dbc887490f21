"""What this program is made of: its own version and the versions of everything it
runs on, for `appliance version` and for bug reports.

The project version comes from git at build time: build/build-binary.sh bakes the
output of `git describe --tags --always --dirty` into the one-file binary as the
module ``_appliance_build`` (generated under build/work/, never in the source tree).
Run from a source checkout, that module is absent and ``appliance.__version__`` is used.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import apsw
import bottle
import gevent
import greenlet
import msgpack
import nanomsg
import setproctitle

import appliance

try:  # only present inside the built binary
    import _appliance_build as build_info
except ImportError:
    build_info = None

PROC_MAPS = "/proc/self/maps"
LIBNANOMSG_NAME = "libnanomsg.so"

# The order people read them in: ours first, then the runtime, then the libraries.
ORDER = ("appliance", "built", "runtime", "python", "sqlite", "apsw", "gevent", "greenlet",
         "bottle", "nanomsg-python", "nanomsg-wrapper", "libnanomsg", "libnanomsg-abi",
         "libnanomsg-path", "msgpack", "prometheus-client", "setproctitle")


def versions() -> dict:
    """Every version as a flat ``{name: str}`` mapping (stable keys, see ``ORDER``)."""
    lib_path = loaded_library_path(LIBNANOMSG_NAME)
    found = {
        "appliance": build_info.VERSION if build_info else appliance.__version__,
        "built": build_info.BUILT_AT if build_info else "not built (source tree)",
        "runtime": _runtime(),
        "python": platform.python_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "gevent": gevent.__version__,
        "greenlet": greenlet.__version__,
        "bottle": bottle.__version__,
        "nanomsg-python": nanomsg.__version__,
        "nanomsg-wrapper": nanomsg.wrapper.__name__,
        "libnanomsg": _libnanomsg_release(lib_path),
        "libnanomsg-abi": libnanomsg_abi(),
        "libnanomsg-path": lib_path or "unknown",
        "msgpack": ".".join(str(part) for part in msgpack.version),
        "prometheus-client": _distribution_version("prometheus-client"),
        "setproctitle": setproctitle.__version__,
    }
    return {name: found[name] for name in ORDER}


def format_versions(found: dict) -> str:
    """The mapping as aligned ``name  value`` lines, for people."""
    width = max((len(name) for name in found), default=0)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in found.items())


def libnanomsg_abi() -> str:
    """The libtool ABI (current.revision.age) the loaded libnanomsg reports about
    itself through nn_symbol: it names the library actually in use, not the headers."""
    return f"{nanomsg.VERSION_CURRENT}.{nanomsg.VERSION_REVISION}.{nanomsg.VERSION_AGE}"


def loaded_library_path(name: str, maps_path: str = PROC_MAPS) -> str | None:
    """The file a shared library named ``name`` (e.g. libnanomsg.so) was mapped from
    in this process, or None: proof of which copy runs, bundled or the system's."""
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6 and os.path.basename(fields[5].strip()).startswith(name):
                    return fields[5].strip()
    except OSError:
        return None
    return None


def pkgconfig_version(pc_path: str) -> str | None:
    """The ``Version:`` line of a pkg-config file, or None when it cannot be read."""
    try:
        with open(pc_path, encoding="utf-8") as pc:
            for line in pc:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        return None
    return None


def _libnanomsg_release(lib_path: str | None) -> str:
    # The library exports no release string, only its ABI. The binary records the
    # release of the copy it bundled; from source, the pkg-config file installed
    # beside the loaded library says which release it is.
    if build_info and build_info.LIBNANOMSG:
        return build_info.LIBNANOMSG
    if lib_path:
        release = pkgconfig_version(os.path.join(os.path.dirname(lib_path), "pkgconfig",
                                                 "nanomsg.pc"))
        if release:
            return release
    return "unknown"


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _runtime() -> str:
    if getattr(sys, "frozen", False):
        return f"one-file binary {sys.executable} (unpacked in {getattr(sys, '_MEIPASS', '?')})"
    return f"source, interpreter {sys.executable}"
