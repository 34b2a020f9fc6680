from __future__ import annotations

import pytest

from meshcomm.runtime.voice import AUDIO, OPUS, VoiceLibrary, VoiceUnavailable, load, missing_reason


def test_missing_shared_library_names_the_debian_package() -> None:
    ghost = VoiceLibrary("json", "json", "meshcomm-no-such-lib", "libmeshcomm-ghost0")
    reason = missing_reason(ghost)
    assert reason is not None and "libmeshcomm-ghost0" in reason and "\n" not in reason
    with pytest.raises(VoiceUnavailable, match="libmeshcomm-ghost0"):
        load(ghost)


def test_missing_python_binding_names_the_pip_extra() -> None:
    ghost = VoiceLibrary("meshcomm_no_such_module", "ghostpkg", "c", "libc6")
    reason = missing_reason(ghost)
    assert reason is not None and "meshcomm[voice]" in reason and "ghostpkg" in reason


def test_available_module_loads() -> None:
    assert load(VoiceLibrary("json", "json", "c", "libc6")).__name__ == "json"


@pytest.mark.parametrize("lib", [OPUS, AUDIO])
def test_real_voice_libraries_give_a_usable_answer(lib: VoiceLibrary) -> None:
    reason = missing_reason(lib)
    if reason is None:
        assert load(lib) is not None
    else:
        assert lib.debian_package in reason or lib.pip_name in reason
