from __future__ import annotations

import pytest

from compressor.registry import Registry, UnknownNameError


def test_registry_rejects_duplicates_and_lists_valid_names():
    registry: Registry = Registry("widget")
    registry.register("a")(1)
    registry.register("b")(2)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        registry.register("a")(3)
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; valid names: a, b"):
        registry.get("c")
    assert registry.names() == ["a", "b"] and "a" in registry and len(registry) == 2
