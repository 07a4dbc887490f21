"""Version discovery documents (nova/api/openstack/compute/versions.py and its view)."""

from __future__ import annotations

import json

from appliance.api.microversion import MAX_VERSION, MIN_VERSION

DOCS_URL = "http://docs.openstack.org/"
MEDIA_V20 = [{"base": "application/json",
              "type": "application/vnd.openstack.compute+json;version=2"}]
MEDIA_V21 = [{"base": "application/json",
              "type": "application/vnd.openstack.compute+json;version=2.1"}]
V20 = {"id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "",
       "updated": "2025-07-04T12:00:00Z"}
V21 = {"id": "v2.1", "status": "CURRENT", "version": MAX_VERSION, "min_version": MIN_VERSION,
       "updated": "2013-07-23T11:33:21Z"}


def versions_document(root: str) -> bytes:
    """GET /: every version with its self link; ``root`` is scheme://host[/path]."""
    return json.dumps({"versions": [
        {**V20, "links": [{"rel": "self", "href": f"{root}/v2/"}]},
        {**V21, "links": [{"rel": "self", "href": f"{root}/v2.1/"}]},
    ]}).encode()


def version_document(root: str) -> bytes:
    """GET /v2.1/: the v2.1 document."""
    return json.dumps({"version": {
        **V21,
        "links": [{"rel": "self", "href": f"{root}/v2.1/"},
                  {"rel": "describedby", "type": "text/html", "href": DOCS_URL}],
        "media-types": MEDIA_V21,
    }}).encode()
