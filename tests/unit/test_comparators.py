"""Built-in shadow comparators and the plugin registry that finds them."""

from __future__ import annotations

import pytest

from gateway import plugins


def comparator(name: str, **options: object):  # type: ignore[no-untyped-def]
    return plugins.create("comparator", name, options)


def test_exact_is_json_equality() -> None:
    eq = comparator("exact")
    assert eq({"predictions": [{"a": 1, "b": [1, 2]}]}, {"predictions": [{"b": [1, 2], "a": 1}]})
    assert eq(1, 1.0)
    assert not eq(True, 1)                       # JSON true is not the number 1
    assert not eq({"a": 1}, {"a": 1, "tag": "v2"})
    assert not eq([1, 2], [2, 1])
    assert eq(b"raw", b"raw") and not eq(b"raw", b"other")


def test_numeric_closeness() -> None:
    close = comparator("numeric", tolerance=0.01)
    assert close({"p": [0.5, 0.25]}, {"p": [0.505, 0.2501]})
    assert not close({"p": [0.5, 0.25]}, {"p": [0.52, 0.25]})
    assert not close({"p": [0.5]}, {"p": [0.5, 0.1]})       # the structure must match
    assert not close({"label": "cat"}, {"label": "dog"})    # non-numbers compare exactly
    rel = comparator("numeric", tolerance=0, relative=0.1)
    assert rel(1000, 1090) and not rel(1000, 1200)
    with pytest.raises(plugins.PluginError):
        comparator("numeric", tolerance=-1)


def test_argmax_agreement_on_score_lists() -> None:
    top = comparator("argmax")
    assert top({"predictions": [[0.1, 0.7, 0.2], [0.9, 0.1]]},
               {"predictions": [[0.2, 0.5, 0.3], [0.6, 0.4]]})
    assert not top({"predictions": [[0.1, 0.7, 0.2]]}, {"predictions": [[0.5, 0.4, 0.1]]})
    assert top({"scores": [1, 3], "id": "a"}, {"scores": [0, 9], "id": "b"})   # ids ignored
    assert not top({"scores": [1, 3]}, {"scores": [1, 3, 0]})


def test_registry_resolves_names_and_module_attr() -> None:
    assert plugins.resolve("comparator", "plugins.comparators:exact") is \
        plugins.resolve("comparator", "exact")
    with pytest.raises(plugins.PluginError, match="no comparator named 'nope'"):
        plugins.resolve("comparator", "nope")
    with pytest.raises(plugins.PluginError, match="cannot load"):
        plugins.resolve("comparator", "no_such_module:x")
    with pytest.raises(plugins.PluginError, match="unexpected keyword"):
        comparator("exact", tolerance=1)
