"""Load the eventlive pytest plugin for this repository's own tests.

Installed (``pip install -e '.[test]'``) the plugin arrives through its ``pytest11``
entry point; registering it twice is an error, so it is named here only when the
entry point is absent (e.g. running the suite straight from a checkout).
"""

from importlib.metadata import entry_points

_PLUGIN = "shim.testing.plugin"

pytest_plugins = (
    [] if any(ep.value == _PLUGIN for ep in entry_points(group="pytest11")) else [_PLUGIN]
)
