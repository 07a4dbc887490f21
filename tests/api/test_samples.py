"""Responses against Nova's api-samples, key by key and type by type, for every
microversion folder (a sample holds from its folder's version until the next folder
that has the same file)."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.api.conftest import ADMIN, MEMBER

# shared/ lies beside the repository's checkout.
SAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "reference",
                       "nova", "api-samples")
if not os.path.isdir(SAMPLES):
    SAMPLES = "/work/shared/reference/nova/api-samples"
MAX_MINOR = 104          # the highest microversion the appliance advertises
SERVER_ID = "0e44cc9c-e052-415d-afbf-469b0d000000"     # server 0 of the fixture
# Maps keyed by data, not by schema: compare their values' shapes only.
FREE_FORM = {"metadata", "extra_specs", "properties", "scheduler_hints"}

# sample file -> (collection path to request, response kind)
SERVER_FILES = {
    "server-get-resp.json": f"/v2.1/servers/{SERVER_ID}",
    "servers-details-resp.json": "/v2.1/servers/detail?limit=1",
    "servers-list-resp.json": "/v2.1/servers?limit=1",
    "server-tags-show-details-resp.json": f"/v2.1/servers/{SERVER_ID}",
    "servers-tags-details-resp.json": "/v2.1/servers/detail?limit=1",
}
FLAVOR_FILES = {
    "flavor-get-resp.json": "/v2.1/flavors/1",
    "flavors-detail-resp.json": "/v2.1/flavors/detail",
    "flavors-list-resp.json": "/v2.1/flavors",
}
# Folders left out, and why.
SKIPPED = {
    ("servers", 69): "down-cell partial records: a replica has no down cells",
}


_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_DIGIT = re.compile(r"\d")


def _minor(folder: str) -> int:
    return 1 if folder == "" else int(folder.split(".")[1])


def _cases(resource: str, files: dict, extra_dirs=()):
    """(sample path, request path, minor) for each file at its first and last version."""
    found = []   # (minor, name, path)
    for sub in [resource, *extra_dirs]:
        base = os.path.join(SAMPLES, sub)
        for folder in [""] + sorted(d for d in os.listdir(base) if d.startswith("v2.")):
            for name in sorted(os.listdir(os.path.join(base, folder))):
                if name in files and name.endswith(".json"):
                    found.append((_minor(folder), name, os.path.join(base, folder, name)))
    cases = []
    for minor, name, path in found:
        if (resource, minor) in SKIPPED:
            continue
        kind = files[name]
        later = [m for m, n, _ in found if files[n] == kind and m > minor]
        until = (min(later) - 1) if later else MAX_MINOR
        for version in sorted({minor, until}):
            if version <= MAX_MINOR:
                rel = os.path.relpath(path, SAMPLES)
                cases.append(pytest.param(path, kind, version, id=f"{rel}@2.{version}"))
    return cases


def assert_same_shape(sample, ours, where="$"):
    if sample is None or ours is None:
        return      # nullable fields: a value on one side, null on the other is fine
    if isinstance(sample, bool) or isinstance(ours, bool):
        assert isinstance(sample, bool) and isinstance(ours, bool), f"{where}: bool vs {ours!r}"
    elif isinstance(sample, (int, float)):
        assert isinstance(ours, (int, float)), f"{where}: number expected, got {ours!r}"
        assert isinstance(ours, float) == isinstance(sample, float), f"{where}: {ours!r}"
    elif isinstance(sample, str):
        assert isinstance(ours, str), f"{where}: string expected, got {ours!r}"
        if _STAMP.match(sample):
            # Timestamps in the sample's format: isotime's 'Z' (created, updated) or the
            # serializer's microseconds (OS-SRV-USG:launched_at).
            assert _DIGIT.sub("9", ours) == _DIGIT.sub("9", sample), f"{where}: {ours!r}"
    elif isinstance(sample, list):
        assert isinstance(ours, list), f"{where}: list expected, got {ours!r}"
        if sample and ours:
            assert_same_shape(sample[0], ours[0], f"{where}[0]")
    elif isinstance(sample, dict):
        assert isinstance(ours, dict), f"{where}: object expected, got {ours!r}"
        key = where.rsplit(".", 1)[-1]
        if key in FREE_FORM:
            return
        if key == "addresses":
            for label, addrs in sample.items():
                ours_any = next(iter(ours.values()))
                assert_same_shape(addrs, ours_any, f"{where}.{label}")
            return
        assert sorted(sample) == sorted(ours), (
            f"{where}: keys differ: missing {sorted(set(sample) - set(ours))}, "
            f"extra {sorted(set(ours) - set(sample))}")
        for k in sample:
            assert_same_shape(sample[k], ours[k], f"{where}.{k}")


def _token_for(sample: dict) -> str:
    text = json.dumps(sample)
    # Nova's samples up to 2.89 are rendered for an admin, later ones for the owner.
    return ADMIN if '"OS-EXT-SRV-ATTR:host"' in text else MEMBER


@pytest.mark.parametrize("sample_path,request_path,minor",
                         _cases("servers", SERVER_FILES, ("os-server-tags",)))
def test_server_samples(api, sample_path, request_path, minor):
    sample = json.load(open(sample_path))
    token = _token_for(sample)
    response = api.get(request_path, token=token, version=f"2.{minor}")
    assert response.status == 200, response.body
    assert response.statements <= 1
    ours = response.json()
    if "servers_links" not in sample and "servers_links" in ours:
        # Some samples were taken without a limit: the link is checked elsewhere.
        assert ours.pop("servers_links")[0]["rel"] == "next"
    assert_same_shape(sample, ours)


@pytest.mark.parametrize("sample_path,request_path,minor", _cases("flavors", FLAVOR_FILES))
def test_flavor_samples(api, sample_path, request_path, minor):
    sample = json.load(open(sample_path))
    response = api.get(request_path, token=MEMBER, version=f"2.{minor}")
    assert response.status == 200, response.body
    assert response.statements <= 1
    ours = response.json()
    if "flavors" in sample:
        # The sample lists Nova's default flavors; compare entry shapes.
        assert sorted(sample) == sorted(ours) or sorted(ours) == ["flavors"]
        assert_same_shape(sample["flavors"][0], ours["flavors"][0], "$.flavors[0]")
    else:
        assert_same_shape(sample, ours)


def test_versions_sample(api):
    sample = json.load(open(os.path.join(SAMPLES, "versions", "versions-get-resp.json")))
    response = api.get("/", token=None)
    assert response.status == 200
    ours = response.json()
    assert_same_shape(sample, ours)
    assert ours["versions"][1]["version"] == "2.104"
    assert ours["versions"][1]["min_version"] == "2.1"
    assert ours["versions"][1]["links"][0]["href"] == f"http://127.0.0.1:{api.port}/v2.1/"


@pytest.mark.parametrize("path", ["/v2.1", "/v2.1/"])
def test_version_sample(api, path):
    sample = json.load(open(os.path.join(SAMPLES, "versions", "v21-version-get-resp.json")))
    response = api.get(path, token=None)
    assert response.status == 200
    ours = response.json()
    assert_same_shape(sample, ours)
    # Nova 34's own sample says 2.104.
    assert ours["version"]["version"] == sample["version"]["version"] == "2.104"
    assert ours["version"]["links"][0] == {"rel": "self",
                                           "href": f"http://127.0.0.1:{api.port}/v2.1/"}
