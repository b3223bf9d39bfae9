"""Load the ahci-emu pytest plugin when it is not installed (running from a checkout).

Installed (``pip install .``), pytest loads it through its ``pytest11`` entry
point, ``ahci_emu``, and this does nothing. From a checkout, the plugin is
registered here: when this conftest is loaded before the command line is parsed
(``pytest tests/scenarios ...``), in time for its options (``--ahci-runner``);
else at configure time (set ``AHCI_EMU_RUNNER`` instead of the option then).
"""

import pytest

import emu.testing.plugin


def _register(manager: pytest.PytestPluginManager) -> None:
    if not manager.is_registered(emu.testing.plugin) and not manager.has_plugin("ahci_emu"):
        manager.register(emu.testing.plugin, "ahci_emu")


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    _register(pluginmanager)


def pytest_configure(config: pytest.Config) -> None:
    _register(config.pluginmanager)
