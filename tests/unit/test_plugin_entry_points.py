"""Plugins found three ways: built-in names, installed entry points, ``module:attr``.

An installed distribution is made the way pip lays one out (a ``*.dist-info`` with
``entry_points.txt`` next to its module) in a temp dir on ``sys.path``: importlib.metadata finds
it exactly as it finds a ``pip install``ed plugin package. No network, no subprocess.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import plugins

MODULE = '''
def cosine(threshold=0.9):
    return lambda a, b: True

def broken():
    raise RuntimeError("never called")

NOT_CALLABLE = 3
'''


def _install(root: Path, entry_points: str, module: str = MODULE) -> None:
    (root / "sgw_fake_plugins.py").write_text(module)
    info = root / "sgw_fake_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sgw-fake-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\n{entry_points}")


def test_an_installed_entry_point_is_a_plugin_name(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, "comparator.cosine = sgw_fake_plugins:cosine\n"
                       "autoscaler.cosine = sgw_fake_plugins:broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    compare = plugins.create("comparator", "cosine", {"threshold": 0.5})
    assert compare({"a": 1}, {"a": 2}) is True
    # the kind is part of the name: the autoscaler entry point is not a comparator
    assert plugins.resolve("autoscaler", "cosine").__name__ == "broken"
    # built-ins win over an installed plugin of the same name, and still resolve
    assert plugins.resolve("comparator", "exact") is plugins.resolve(
        "comparator", "gateway.plugins_builtin.comparators:exact")


def test_unknown_names_list_built_ins_and_installed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, "comparator.cosine = sgw_fake_plugins:cosine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(plugins.PluginError) as err:
        plugins.resolve("comparator", "cosin")
    assert "no comparator named 'cosin'" in str(err.value)
    assert "argmax, exact, numeric" in str(err.value) and "installed: cosine" in str(err.value)


def test_a_broken_entry_point_names_its_distribution(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, "comparator.gone = sgw_fake_plugins:missing\n"
                       "comparator.three = sgw_fake_plugins:NOT_CALLABLE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(plugins.PluginError, match=r"'gone' \(entry point "
                       r"'sgw_fake_plugins:missing' of sgw-fake-plugins\) cannot be loaded"):
        plugins.resolve("comparator", "gone")
    with pytest.raises(plugins.PluginError, match="is not callable"):
        plugins.resolve("comparator", "three")


def test_the_old_top_level_path_still_names_the_built_ins() -> None:
    # configs written for 0.1.0 say plugins.comparators:exact / plugins.queue_latency:...
    assert plugins.resolve("comparator", "plugins.comparators:exact") is \
        plugins.resolve("comparator", "exact")
    assert plugins.resolve("autoscaler", "plugins.queue_latency:queue_latency") is \
        plugins.resolve("autoscaler", "queue_latency")
    with pytest.raises(plugins.PluginError, match="cannot load"):
        plugins.resolve("comparator", "plugins.nothing_here:x")
