"""Release tooling: the project's version, its images, and the install manifests rendered for a release.

Not shipped in any image or wheel; the release workflow (.github/workflows/release.yml) and the tests run it
from a checkout (`python -m release.render_install ...`).
"""
