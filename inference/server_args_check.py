"""SGLang's own argument parser as the last check of the flags the launcher built.

The inference.config translation (workload_contract.inference_config) knows SGLang's flags by name only;
where SGLang is installed, its parser also refuses a misspelt flag or a bad value before the server starts.
"""

from __future__ import annotations

import re
from typing import Any

from workload_contract.inference_config import RuntimeConfigError


def _server_parser() -> Any:
    import argparse

    # Only where SGLang is installed (the runtime image); it ships no type information.
    from sglang.srt.server_args import ServerArgs  # type: ignore[import-untyped]

    parser = argparse.ArgumentParser(
        prog="sglang.launch_server", add_help=False, allow_abbrev=False, exit_on_error=False
    )
    ServerArgs.add_cli_args(parser)
    return parser


_OPTION = re.compile(r"^--[a-z0-9][a-z0-9-]*$")


def check_with_sglang_parser(argv: list[str]) -> None:
    """Parse SGLang's arguments with SGLang's own parser; RuntimeConfigError names the flag it refuses."""
    parser = _server_parser()
    try:
        _, unknown = parser.parse_known_args(argv)
    except (Exception, SystemExit) as e:  # noqa: BLE001 (argparse reports a bad value either way)
        raise RuntimeConfigError(f"SGLang refuses the flags: {e}") from None
    flags = [u for u in unknown if _OPTION.match(u)]
    if flags or unknown:
        raise RuntimeConfigError(
            f"SGLang does not know {', '.join(flags or unknown)}; check the names in inference.config's "
            "`sglang:` section against `python -m sglang.launch_server --help`"
        )
