"""Lazy loading of the voice libraries (audio devices and the Opus codec).

Nodes that only relay never need them, so they are imported on first use, and a missing
piece is reported in one line that names what to install: the Python package (the
``voice`` extra) and the Debian library it binds to.
"""

from __future__ import annotations

import ctypes.util
import importlib
from dataclasses import dataclass
from types import ModuleType

from meshcomm.errors import MeshcommError


class VoiceUnavailable(MeshcommError):
    """A voice library is missing; the message says what to install."""


@dataclass(frozen=True, slots=True)
class VoiceLibrary:
    module: str          # Python module to import
    pip_name: str        # PyPI package providing it
    c_library: str       # shared library it loads (ctypes.util.find_library name)
    debian_package: str  # Debian package shipping that library


OPUS = VoiceLibrary("opuslib", "opuslib", "opus", "libopus0")
AUDIO = VoiceLibrary("sounddevice", "sounddevice", "portaudio", "libportaudio2")


def missing_reason(lib: VoiceLibrary) -> str | None:
    """None if ``lib`` can be used, else the one-line reason naming what to install."""
    if ctypes.util.find_library(lib.c_library) is None:
        return (f"voice needs the {lib.c_library} library: install the Debian package "
                f"{lib.debian_package} (apt-get install {lib.debian_package})")
    try:
        importlib.import_module(lib.module)
    except ImportError:
        return (f"voice needs the Python package {lib.pip_name}: "
                f"pip install 'meshcomm[voice]' (or pip install {lib.pip_name})")
    except OSError as exc:  # the binding found no usable shared library
        return (f"voice: {lib.module} could not load {lib.c_library} ({exc}); install the "
                f"Debian package {lib.debian_package}")
    return None


def load(lib: VoiceLibrary) -> ModuleType:
    """Import a voice library, or raise VoiceUnavailable with a one-line message."""
    reason = missing_reason(lib)
    if reason is not None:
        raise VoiceUnavailable(reason)
    return importlib.import_module(lib.module)
