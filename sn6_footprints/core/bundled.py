"""The model that ships with the plugin, and where it lives."""
from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
BUNDLED_MODEL = MODELS_DIR / "sn6_sim_unet11_w025.pt"


def bundled_model_path() -> Path:
    """The bundled checkpoint; a clear error if the plugin was installed without it."""
    if not BUNDLED_MODEL.is_file():
        raise FileNotFoundError(f"The bundled model {BUNDLED_MODEL.name} is missing from {MODELS_DIR}; "
                                "reinstall the plugin or choose a model file.")
    return BUNDLED_MODEL
