"""The plugin's own widgets (QGIS's process only; nothing here imports the core)."""
