"""The project's version, whose one source is pyproject.toml: read from pyproject.toml itself in a source
checkout (installed metadata can lag behind an edited version), else from the installed distribution's
metadata (the hook image installs the project with pip). The images the hook server names by default
carry this version (hooks/settings.py)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "kaito-sglang"
SOURCE_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def project_version(pyproject: Path = SOURCE_PYPROJECT) -> str:
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == DISTRIBUTION:
            return project["version"]
    return metadata.version(DISTRIBUTION)


VERSION = project_version()
