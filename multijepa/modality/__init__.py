"""Modalities as registered definitions (`base.py`); the built-ins register on import, in this order."""
# isort: skip_file

from . import image  # noqa: F401
from . import text  # noqa: F401
from . import audio  # noqa: F401
from . import video  # noqa: F401
from .base import (Modality, get_modality, is_media, media_modalities, register_modality, registered_modalities,
                   unregister_modality)

__all__ = ["Modality", "get_modality", "is_media", "media_modalities", "register_modality", "registered_modalities",
           "unregister_modality"]
