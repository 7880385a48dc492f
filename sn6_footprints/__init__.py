"""sn6_footprints: building footprints from SAR with TernausNet, as a QGIS Processing plugin."""


def classFactory(iface):  # noqa: N802 - QGIS's entry point name
    """QGIS calls this to load the plugin; imported lazily so the core stays QGIS-free."""
    from .plugin import Sn6FootprintsPlugin

    return Sn6FootprintsPlugin(iface)
