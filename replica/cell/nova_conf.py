"""The options of Nova's own configuration file that the publisher needs: the ``[quota]``
limits every project has unless its own or the ``default`` quota class says otherwise.

Nova reads them with oslo.config; this reads the same INI file without it: ``[quota]``
``instances``, ``cores``, ``ram``, ``metadata_items``, ``injected_files``,
``injected_file_content_bytes``, ``injected_file_path_length`` (the
``injected_file_path_bytes`` resource), ``key_pairs``, ``server_groups``,
``server_group_members``, and their old ``[DEFAULT] quota_<name>`` spellings (the
``[quota]`` one wins, as in oslo.config). An option repeated in the file: the last one, as
oslo.config. The quota driver must be Nova's database driver (the limits this replicates);
another driver is refused."""

from __future__ import annotations

import configparser

from replica import feed

# [quota] option -> Nova's quota resource.
QUOTA_OPTIONS = {
    "instances": "instances", "cores": "cores", "ram": "ram",
    "metadata_items": "metadata_items", "injected_files": "injected_files",
    "injected_file_content_bytes": "injected_file_content_bytes",
    "injected_file_path_length": "injected_file_path_bytes", "key_pairs": "key_pairs",
    "server_groups": "server_groups", "server_group_members": "server_group_members",
}
DB_QUOTA_DRIVER = "nova.quota.DbQuotaDriver"


class NovaConfError(ValueError):
    """nova.conf cannot be used: the message names the file and the option."""


def _parser(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None,
                                          default_section="\0none")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except OSError as exc:
        raise NovaConfError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except configparser.Error as exc:
        raise NovaConfError(f"{path}: not an INI file Nova could read: "
                            f"{str(exc).splitlines()[0]}") from None
    return parser


def _limit(path: str, section: str, option: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise NovaConfError(f"{path}: [{section}] {option} = {raw!r} is not an integer"
                            ) from None
    if value < -1:
        raise NovaConfError(f"{path}: [{section}] {option} = {value}: a quota limit is -1 "
                            f"(unlimited) or more")
    return value


def quota_defaults(path: str) -> dict[str, int]:
    """Every quota resource's default limit as Nova configured with ``path`` has it
    (Nova's own option defaults for what the file does not set); NovaConfError if the
    file is unreadable, a value is not a limit, or the quota driver is not Nova's
    database driver."""
    parser = _parser(path)
    driver = (parser.get("quota", "driver", fallback=DB_QUOTA_DRIVER) or "").strip()
    if driver != DB_QUOTA_DRIVER:
        raise NovaConfError(
            f"{path}: [quota] driver = {driver}: only {DB_QUOTA_DRIVER}'s limits (Nova's "
            f"API database) are replicated, the appliance's /limits and quota sets would "
            f"not be this driver's")
    limits = dict(feed.QUOTA_NOVA_DEFAULTS)
    for option, resource in QUOTA_OPTIONS.items():
        for section, name in (("quota", option), ("DEFAULT", f"quota_{option}")):
            raw = parser.get(section, name, fallback=None)
            if raw is not None:
                limits[resource] = _limit(path, section, name, raw)
                break
    return limits
