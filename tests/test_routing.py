"""The routing core, on its own: no sockets, Django or Redis."""

import pytest

from wsserver.audience import Audience
from wsserver.routing import Permissions, Principal, Router


class Conn:
    """Stands for a connection: the router only needs hashable objects."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


def user(user_id, permissions):
    return Principal(user_id, str(user_id), permissions)


def test_routes_by_content_type():
    router = Router()
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    router.add(a, user(1, Permissions(frozenset({10, 11}))))
    router.add(b, user(2, Permissions(frozenset({11}))))
    router.add(c, user(3, Permissions(frozenset())))
    assert set(router.recipients(Audience.of_content_type(10))) == {a}
    assert set(router.recipients(Audience.of_content_type(11))) == {a, b}
    assert set(router.recipients(Audience.of_content_type(12))) == set()
    assert router.count_recipients(11) == 2
    assert len(router) == 3


def test_superusers_receive_every_content_type():
    router = Router()
    admin, viewer = Conn("admin"), Conn("viewer")
    router.add(admin, user(1, Permissions.all()))
    router.add(viewer, user(2, Permissions(frozenset({5}))))
    assert set(router.recipients(Audience.of_content_type(5))) == {admin, viewer}
    assert list(router.recipients(Audience.of_content_type(999))) == [admin]


def test_remove_forgets_every_index():
    router = Router()
    a, b = Conn("a"), Conn("b")
    router.add(a, user(1, Permissions(frozenset({1, 2}))))
    router.add(b, user(1, Permissions.all()))
    router.remove(a)
    router.remove(b)
    router.remove(b)  # unknown connections are ignored
    assert list(router.recipients(Audience.of_content_type(1))) == []
    assert router.connections_of(1) == frozenset()
    assert len(router) == 0
    # Empty buckets are dropped so that memory follows open connections.
    assert router._by_content_type == {}
    assert router._by_user == {}


def test_update_applies_to_the_next_event():
    router = Router()
    a = Conn("a")
    router.add(a, user(1, Permissions(frozenset({1}))))
    router.update(a, user(1, Permissions(frozenset({2}))))
    assert list(router.recipients(Audience.of_content_type(1))) == []
    assert list(router.recipients(Audience.of_content_type(2))) == [a]
    router.update(a, user(1, Permissions.all()))
    assert list(router.recipients(Audience.of_content_type(3))) == [a]
    router.update(a, user(1, Permissions()))
    assert list(router.recipients(Audience.of_content_type(3))) == []
    assert router.permissions(a) == Permissions()


def test_connections_by_user():
    router = Router()
    a1, a2, b = Conn("a1"), Conn("a2"), Conn("b")
    router.add(a1, user("alice", Permissions()))
    router.add(a2, user("alice", Permissions()))
    router.add(b, user("bob", Permissions()))
    assert router.connections_of("alice") == {a1, a2}
    assert set(router.users()) == {"alice", "bob"}
    router.remove(a1)
    assert router.connections_of("alice") == {a2}


def test_adding_twice_is_an_error():
    router = Router()
    a = Conn("a")
    router.add(a, user(1, Permissions()))
    with pytest.raises(ValueError):
        router.add(a, user(1, Permissions()))


def test_permissions_allows():
    assert Permissions.all().allows(42)
    assert Permissions(frozenset({1})).allows(1)
    assert not Permissions(frozenset({1})).allows(2)


def test_the_router_holds_each_connections_principal():
    router = Router()
    a = Conn("a")
    alice = user("alice", Permissions(frozenset({1})))
    router.add(a, alice)
    assert router.principal(a) is alice
    assert list(router.principals()) == [alice]
    reloaded = user("alice", Permissions(frozenset({2})))
    router.update(a, reloaded)
    assert router.principal(a) is reloaded
    with pytest.raises(ValueError):
        router.update(a, user("bob", Permissions()))
    assert router.remove(a) is reloaded
    assert router.remove(a) is None
    assert list(router.principals()) == []


def member(user_id, *, groups=(), codenames=(), cts=(), superuser=False):
    permissions = Permissions.all() if superuser else Permissions(frozenset(cts))
    return Principal(
        str(user_id),
        str(user_id),
        permissions,
        group_ids=frozenset(groups),
        codenames=frozenset(codenames),
    )


def audience(**parts):
    return Audience(**{key: frozenset(value) for key, value in parts.items()})


def recipients(router, **parts):
    found = list(router.recipients(audience(**parts)))
    assert len(found) == len(set(found)), "each connection once"
    return set(found)


def test_routes_by_user_group_and_permission():
    router = Router()
    clerk = ["shop.view_order", "shop.change_order"]
    a1, a2 = Conn("a1"), Conn("a2")
    b, c, root = Conn("b"), Conn("c"), Conn("root")
    router.add(a1, member(1, groups=[10], codenames=clerk))
    router.add(a2, member(1, groups=[10], codenames=clerk))
    router.add(b, member(2, groups=[10, 11], codenames=["shop.view_order"]))
    router.add(c, member(3))
    router.add(root, member(4, superuser=True, codenames=["shop.view_order"]))
    assert recipients(router, users=["1"]) == {a1, a2}
    assert recipients(router, users=["1", "3", "99"]) == {a1, a2, c}
    assert recipients(router, groups=[10]) == {a1, a2, b}
    assert recipients(router, groups=[11, 12]) == {b}
    assert recipients(router, permissions=["shop.view_order"]) == {a1, a2, b, root}
    assert recipients(router, permissions=["shop.change_order"]) == {a1, a2, root}
    assert recipients(router, permissions=["shop.delete_order"]) == {root}
    both = ["shop.view_order", "shop.change_order"]
    assert recipients(router, permissions=both) == {a1, a2, b, root}
    # The union of audiences names each connection once; superusers never
    # get another user's personal or group events.
    assert recipients(router, users=["2"], groups=[10]) == {a1, a2, b}
    assert recipients(router, users=["3"], permissions=["x.y"]) == {c, root}
    assert recipients(router, groups=[10], content_types=[5]) == {a1, a2, b, root}


def test_a_personal_event_is_one_lookup():
    router = Router()
    connections = [Conn(str(n)) for n in range(1000)]
    for n, connection in enumerate(connections):
        router.add(connection, member(n, groups=[n % 3], codenames=["a.b"]))
    found = router.recipients(audience(users=["7"]))
    assert found is router._by_user["7"]  # no copy, no scan


def test_group_and_permission_indexes_follow_updates_and_removals():
    router = Router()
    a, b = Conn("a"), Conn("b")
    router.add(a, member(1, groups=[10], codenames=["shop.view_order"]))
    router.add(b, member(2, groups=[10], codenames=["shop.view_order"]))
    # Added to a group, removed from another, a permission lost.
    router.update(a, member(1, groups=[11], codenames=["shop.add_order"]))
    assert recipients(router, groups=[10]) == {b}
    assert recipients(router, groups=[11]) == {a}
    assert recipients(router, permissions=["shop.view_order"]) == {b}
    assert recipients(router, permissions=["shop.add_order"]) == {a}
    router.update(a, member(1, superuser=True))
    assert recipients(router, permissions=["shop.add_order"]) == {a}
    router.remove(a)
    router.remove(b)
    assert router._by_group == {}
    assert router._by_codenames == {}
    assert router._codename_sets == {}
    assert router._everything == set()
