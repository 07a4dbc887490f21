"""appliance.about from the source tree (no binary needed): the keys, the table, and
the two readers behind libnanomsg's version."""

from __future__ import annotations

import json
import platform

import apsw

import appliance
from appliance import about


def test_versions_has_every_key_in_order_and_is_json():
    found = about.versions()
    assert tuple(found) == about.ORDER
    assert all(isinstance(value, str) and value for value in found.values())
    assert json.loads(json.dumps(found)) == found


def test_versions_from_source_fall_back_to_the_package_version():
    found = about.versions()
    assert found["appliance"] == appliance.__version__
    assert found["built"] == "not built (source tree)"
    assert found["python"] == platform.python_version()
    assert found["sqlite"] == apsw.sqlite_lib_version()
    assert found["nanomsg-wrapper"] == "_nanomsg_cpy"


def test_libnanomsg_is_the_library_mapped_into_this_process():
    found = about.versions()
    assert "libnanomsg.so" in found["libnanomsg-path"]
    assert found["libnanomsg-abi"].count(".") == 2


def test_format_versions_aligns_values():
    text = about.format_versions({"python": "3.11.7", "libnanomsg-abi": "5.1.0"})
    assert text.splitlines() == ["python          3.11.7", "libnanomsg-abi  5.1.0"]
    assert about.format_versions({}) == ""


def test_loaded_library_path_reads_a_maps_file(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r--p 00000000 fd:00 1 /usr/lib/libc.so.6\n"
        "7f02-7f03 rw-p 00000000 00:00 0 \n"
        "7f04-7f05 r-xp 00000000 fd:00 2 /tmp/_MEIabc/libnanomsg.so.5\n")
    assert about.loaded_library_path("libnanomsg.so", str(maps)) == "/tmp/_MEIabc/libnanomsg.so.5"
    assert about.loaded_library_path("libmissing.so", str(maps)) is None
    assert about.loaded_library_path("libnanomsg.so", str(tmp_path / "absent")) is None


def test_pkgconfig_version(tmp_path):
    pc = tmp_path / "nanomsg.pc"
    pc.write_text("prefix=/usr\nName: nanomsg\nVersion: 1.1.5\nRequires:\n")
    assert about.pkgconfig_version(str(pc)) == "1.1.5"
    (tmp_path / "empty.pc").write_text("Name: x\n")
    assert about.pkgconfig_version(str(tmp_path / "empty.pc")) is None
    assert about.pkgconfig_version(str(tmp_path / "absent.pc")) is None
