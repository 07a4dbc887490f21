"""A stand-in for keystonemiddleware's ``auth_token`` filter in nova-api's paste pipeline.

keystonemiddleware validates the ``X-Auth-Token`` against Keystone and passes the token's
identity on as ``X-User-Id``, ``X-Project-Id``, ``X-Roles``... headers, which Nova's
``keystonecontext`` filter turns into the request context. Here the token itself names the
identity, so tests need no Keystone:

    X-Auth-Token: USER:PROJECT               roles member, reader
    X-Auth-Token: USER:PROJECT:admin         roles admin, member, reader
    X-Auth-Token: USER:PROJECT:ROLE,ROLE     those roles (and the ones they imply)

Roles imply others as Keystone's default implied roles do (admin > member > reader). A
missing or malformed token gets keystonemiddleware's 401. Identity headers a client sends are
removed first, as keystonemiddleware removes them.
"""

import json

IMPLIED_ROLES = {"admin": ("member", "reader"), "member": ("reader",)}
IDENTITY_HEADERS = (
    "X_IDENTITY_STATUS", "X_SERVICE_IDENTITY_STATUS", "X_DOMAIN_ID", "X_DOMAIN_NAME",
    "X_PROJECT_ID", "X_PROJECT_NAME", "X_PROJECT_DOMAIN_ID", "X_PROJECT_DOMAIN_NAME",
    "X_USER_ID", "X_USER_NAME", "X_USER_DOMAIN_ID", "X_USER_DOMAIN_NAME", "X_ROLES",
    "X_SERVICE_CATALOG", "X_IS_ADMIN_PROJECT", "X_SYSTEM_SCOPE", "X_TENANT_ID",
    "X_TENANT_NAME", "X_TENANT", "X_USER", "X_ROLE", "X_SERVICE_ROLES",
    "X_SERVICE_USER_ID", "X_SERVICE_PROJECT_ID", "X_AUTH_TOKEN_ERROR",
)


def parse_token(token):
    """``(user_id, project_id, roles)`` of a test token, or None."""
    parts = (token or "").split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        return None
    roles = [r for r in (parts[2].split(",") if len(parts) == 3 else ["member"]) if r]
    effective = []
    for role in roles:
        for name in (role, *IMPLIED_ROLES.get(role, ())):
            if name not in effective:
                effective.append(name)
    return parts[0], parts[1], effective


class TokenHeaders:
    def __init__(self, app, www_authenticate_uri="http://keystone.invalid/identity"):
        self.app = app
        self.www_authenticate_uri = www_authenticate_uri

    def __call__(self, environ, start_response):
        for name in IDENTITY_HEADERS:
            environ.pop("HTTP_" + name, None)
        identity = parse_token(environ.get("HTTP_X_AUTH_TOKEN"))
        if identity is None:
            body = json.dumps({"error": {
                "code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication."}}).encode()
            start_response("401 Unauthorized", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("WWW-Authenticate", f'Keystone uri="{self.www_authenticate_uri}"')])
            return [body]
        user_id, project_id, roles = identity
        environ.update({
            "HTTP_X_IDENTITY_STATUS": "Confirmed",
            "HTTP_X_USER_ID": user_id, "HTTP_X_USER_NAME": user_id,
            "HTTP_X_USER_DOMAIN_ID": "default", "HTTP_X_USER_DOMAIN_NAME": "Default",
            "HTTP_X_PROJECT_ID": project_id, "HTTP_X_PROJECT_NAME": project_id,
            "HTTP_X_PROJECT_DOMAIN_ID": "default", "HTTP_X_PROJECT_DOMAIN_NAME": "Default",
            "HTTP_X_ROLES": ",".join(roles), "HTTP_X_IS_ADMIN_PROJECT": "True",
        })
        return self.app(environ, start_response)


def filter_factory(global_conf, **local_conf):
    """The paste.deploy entry point (``paste.filter_factory``)."""
    def make_filter(app):
        return TokenHeaders(app, local_conf.get("www_authenticate_uri",
                                                "http://keystone.invalid/identity"))
    return make_filter
