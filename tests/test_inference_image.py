"""The runtime image and the code agree on the one pinned SGLang release."""

import re
from pathlib import Path

import pytest

from inference import SGLANG_IMAGE, SGLANG_VERSION

DOCKERFILE = Path(__file__).resolve().parents[1] / "inference" / "Dockerfile"


def test_dockerfile_base_image_is_the_pinned_sglang():
    text = DOCKERFILE.read_text()
    assert re.search(rf"^ARG SGLANG_IMAGE={re.escape(SGLANG_IMAGE)}$", text, re.M)
    assert "FROM ${SGLANG_IMAGE} AS runtime" in text
    assert f"sglang.__version__ == '{SGLANG_VERSION}'" in text
    # the default build target (last stage) is the SGLang runtime
    assert text.rstrip().split("\nFROM ")[-1].startswith("${SGLANG_IMAGE} AS runtime")
    assert 'ENTRYPOINT ["python", "-m", "inference.launch"]' in text
    assert "gcc -static" in text and "/usr/local/bin/kaito-copy" in text


def test_venv_sglang_is_the_pinned_release():
    """The parser tests in test_inference_launch.py are only meaningful against the pinned release."""
    sglang_version = pytest.importorskip("sglang.version", reason="sglang is not installed in this venv")
    assert sglang_version.__version__ == SGLANG_VERSION


def test_router_target_pins_the_sglang_router_release():
    from inference import SGLANG_ROUTER_VERSION

    stage = DOCKERFILE.read_text().split("AS router\n", 1)[1].split("\nFROM ", 1)[0]
    assert f'"sglang-router=={SGLANG_ROUTER_VERSION}"' in stage
    assert "COPY --from=kaito-packages /opt/kaito/ /opt/kaito/" in stage and "USER 65532:65532" in stage
