"""The publisher's re-check of Neutron's security group names (rechecks.SecurityGroupWatch):
which live servers it sends again. Neutron is a dict here; the real HTTP path is tested
against a Neutron stub in tests/realnova."""

from replica.cell import neutron, rechecks


class Names(neutron.SecurityGroupNames):
    def __init__(self, ports: dict[str, list[str]]):
        super().__init__("http://127.0.0.1:9")
        self.ports = ports

    def _ask(self, uuids):
        return {u: list(self.ports.get(u, [])) for u in uuids}


def watch_over(live: list[str], ports: dict[str, list[str]]):
    names = Names(ports)
    return rechecks.SecurityGroupWatch(lambda sql, params=(): [(u,) for u in live],
                                       names), names


def test_nothing_on_the_first_call_then_only_changes():
    live = ["a", "b"]
    watch, names = watch_over(live, {"a": ["default"], "b": []})
    assert watch.changed_servers() == []            # seeding: built with these, about
    assert watch.changed_servers() == []
    names.ports["b"] = ["web"]
    assert watch.changed_servers() == ["b"]
    assert watch.changed_servers() == []


def test_a_new_server_with_groups_at_first_sight_is_sent_again_once():
    """Its entity may have been built before its ports existed."""
    live = ["a"]
    watch, names = watch_over(live, {"a": ["default"]})
    watch.changed_servers()
    live += ["new-with-ports", "new-without"]
    names.ports["new-with-ports"] = ["default"]
    assert watch.changed_servers() == ["new-with-ports"]
    assert watch.changed_servers() == []
    names.ports["new-without"] = ["default"]          # its ports came later
    assert watch.changed_servers() == ["new-without"]


def test_a_server_gone_is_forgotten():
    live = ["a", "b"]
    watch, names = watch_over(live, {"a": ["default"], "b": ["default"]})
    watch.changed_servers()
    live.remove("b")
    assert watch.changed_servers() == []
    assert "b" not in names.known
