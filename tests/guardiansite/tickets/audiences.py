"""Audience callables that misbehave, for the tests."""


def broken(instance, action):
    raise RuntimeError(f"no audience for {instance}")


def nobody(instance, action):
    return {"users": [], "groups": []}
