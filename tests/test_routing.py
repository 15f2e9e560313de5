"""The routing core, on its own: no sockets, Django or Redis."""

import pytest

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
    assert set(router.recipients(10)) == {a}
    assert set(router.recipients(11)) == {a, b}
    assert set(router.recipients(12)) == set()
    assert router.count_recipients(11) == 2
    assert len(router) == 3


def test_superusers_receive_every_content_type():
    router = Router()
    admin, viewer = Conn("admin"), Conn("viewer")
    router.add(admin, user(1, Permissions.all()))
    router.add(viewer, user(2, Permissions(frozenset({5}))))
    assert set(router.recipients(5)) == {admin, viewer}
    assert list(router.recipients(999)) == [admin]


def test_remove_forgets_every_index():
    router = Router()
    a, b = Conn("a"), Conn("b")
    router.add(a, user(1, Permissions(frozenset({1, 2}))))
    router.add(b, user(1, Permissions.all()))
    router.remove(a)
    router.remove(b)
    router.remove(b)  # unknown connections are ignored
    assert list(router.recipients(1)) == []
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
    assert list(router.recipients(1)) == []
    assert list(router.recipients(2)) == [a]
    router.update(a, user(1, Permissions.all()))
    assert list(router.recipients(3)) == [a]
    router.update(a, user(1, Permissions()))
    assert list(router.recipients(3)) == []
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
