"""The model that ships with the plugin, and where it lives."""
from __future__ import annotations

from pathlib import Path

from .settings import ModelSettings

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
BUNDLED_MODEL = MODELS_DIR / "sn6_sim_unet11_w025.pt"


def bundled_model_path() -> Path:
    """The bundled checkpoint; a clear error if the plugin was installed without it."""
    if not BUNDLED_MODEL.is_file():
        raise FileNotFoundError(f"The bundled model {BUNDLED_MODEL.name} is missing from {MODELS_DIR}; "
                                "reinstall the plugin or choose a model file.")
    return BUNDLED_MODEL


def describe_model(model_path, settings: ModelSettings) -> str:
    """What the log says of a model: its file, and for the bundled one where its card is (the
    checkpoint's own description names the training script, which the plugin does not ship)."""
    if not model_path or Path(model_path).resolve() == BUNDLED_MODEL.resolve():
        return f"the bundled model, trained on simulated SAR (model card: {MODELS_DIR / 'MODEL_CARD.md'})"
    return f"{settings.description} ({model_path})"
