"""nova.conf's [quota] defaults: read as Nova reads them (the [DEFAULT] quota_* spellings,
the last of a repeated option, Nova's own defaults for the rest), refused when they cannot
be Nova's; ``appliance cell --nova-conf`` publishes them as the defaults' limits under the
default quota class."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from replica import feed
from replica.cell import outbox, simulator
from replica.cell.nova_conf import NovaConfError, quota_defaults
from tests.conftest import ROOT, wait_for
from tests.replica.cell.conftest import PYTHON, Control, child_env


def _conf(tmp_path, text: str) -> str:
    path = tmp_path / "nova.conf"
    path.write_text(text)
    return str(path)


def test_quota_section_and_nova_defaults(tmp_path):
    path = _conf(tmp_path, "[DEFAULT]\ndebug = true\nquota_cores = 99\nquota_ram = 1\n"
                           "[quota]\ninstances = 50\nram = 204800\n"
                           "injected_file_path_length = 4096\nkey_pairs = -1\n"
                           "[database]\nconnection = mysql+pymysql://nova:$x@db/nova\n")
    limits = quota_defaults(path)
    assert limits == {**feed.QUOTA_NOVA_DEFAULTS, "instances": 50, "ram": 204800,
                      "cores": 99, "injected_file_path_bytes": 4096, "key_pairs": -1}


def test_the_last_of_a_repeated_option_wins(tmp_path):
    path = _conf(tmp_path, "[quota]\ninstances = 5\n[quota]\ninstances = 6\n")
    assert quota_defaults(path)["instances"] == 6


def test_a_file_without_quota_options_is_nova_defaults(tmp_path):
    assert quota_defaults(_conf(tmp_path, "[DEFAULT]\nhost = x\n")) == feed.QUOTA_NOVA_DEFAULTS


@pytest.mark.parametrize("text,message", [
    ("[quota]\ncores = many\n", "[quota] cores = 'many' is not an integer"),
    ("[quota]\ncores = -2\n", "[quota] cores = -2: a quota limit is -1"),
    ("[quota]\ndriver = nova.quota.NoopQuotaDriver\n", "only nova.quota.DbQuotaDriver"),
    ("[quota]\ndriver = nova.quota.UnifiedLimitsDriver\n", "only nova.quota.DbQuotaDriver"),
    ("instances = 1\n", "not an INI file"),
])
def test_refused(tmp_path, text, message):
    with pytest.raises(NovaConfError, match=None) as raised:
        quota_defaults(_conf(tmp_path, text))
    assert message in str(raised.value) and str(tmp_path) in str(raised.value)


def test_a_missing_file(tmp_path):
    with pytest.raises(NovaConfError, match="cannot read it"):
        quota_defaults(str(tmp_path / "absent.conf"))


def _cell(tmp_path, *extra: str) -> subprocess.Popen:
    db = str(tmp_path / "nova_api.db")
    if not os.path.exists(db):
        outbox.init_cell_db(db, "flavors", flavors=True)
        simulator.seed_flavors(db)
    argv = [PYTHON, "-m", "appliance", "cell", "--db", db, "--name", "flavors",
            "--feed", f"ipc://{tmp_path}/f.feed", "--control", f"ipc://{tmp_path}/f.ctl",
            *extra]
    return subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_appliance_cell_refuses_a_bad_nova_conf(tmp_path):
    proc = _cell(tmp_path, "--nova-conf", _conf(tmp_path, "[quota]\nram = lots\n"))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "appliance cell: error:" in err and "[quota] ram = 'lots' is not an integer" in err


def test_appliance_cell_publishes_the_nova_conf_defaults(tmp_path):
    """The defaults' entity: nova.conf's limits, the default quota class's rows over them
    (as Nova's DbQuotaDriver); a project's own limits are its rows only."""
    path = _conf(tmp_path, "[quota]\ninstances = 31\ncores = 62\nserver_groups = 7\n")
    db = str(tmp_path / "nova_api.db")
    outbox.init_cell_db(db, "flavors", flavors=True)
    simulator.seed_flavors(db)
    from replica.cell import connection
    conn = connection.open_cell(db)
    conn.execute("INSERT INTO quota_classes (class_name, resource, hard_limit) "
                 "VALUES ('default', 'cores', 64)")
    conn.close()
    proc = _cell(tmp_path, "--nova-conf", path)
    control = Control(f"ipc://{tmp_path}/f.ctl")
    try:
        wait_for(lambda: proc.poll() is None and os.path.exists(f"{tmp_path}/f.ctl")
                 and control.call("hello"), 30, what="the publisher's hello")
        reply = control.call("fetch", kind="quota", keys=["class/default", "project/demo"])
        defaults = json.loads(reply["entities"]["class/default"])["limits"]
        assert defaults == {**feed.QUOTA_NOVA_DEFAULTS, "instances": 31, "cores": 64,
                            "server_groups": 7}
        demo = json.loads(reply["entities"]["project/demo"])["limits"]
        assert demo["instances"] == 100 and demo["server_groups"] is None
    finally:
        control.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
