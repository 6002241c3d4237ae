"""Entry point: ``python -m standin_metacontroller --kubeconfig FILE`` (tests/cluster on sys.path),
``python -m tests.cluster.standin_metacontroller ...`` (repository root on sys.path), or this file's path."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from standin_metacontroller import labelselectors
    from standin_metacontroller.kube import FIELD_MANAGER, Kube
    from standin_metacontroller.manager import Manager
    from standin_metacontroller.webhook import parse_duration
else:
    from . import labelselectors
    from .kube import FIELD_MANAGER, Kube
    from .manager import Manager
    from .webhook import parse_duration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="standin_metacontroller", description="Test stand-in for Metacontroller v4.17.2 (see README.md)."
    )
    parser.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig of the apiserver (default: $KUBECONFIG)"
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=30.0,
        help="cap of the per-object retry backoff in seconds (Metacontroller: 1000)",
    )
    parser.add_argument(
        "--field-manager",
        default=FIELD_MANAGER,
        help="server-side apply field manager (Metacontroller's default: metacontroller)",
    )
    parser.add_argument(
        "--discovery-interval",
        type=parse_duration,
        default=20.0,
        help="how often API discovery is refreshed, Go duration (Metacontroller's flag; "
        "a resource not found also refreshes it at once)",
    )
    parser.add_argument(
        "--target-label-selector",
        type=labelselectors.parse,
        default=None,
        help="only run the controller objects whose labels match (Metacontroller's flag), "
        "e.g. 'team=a' or '!standin-test'",
    )
    args = parser.parse_args(argv)
    if not args.kubeconfig:
        parser.error("--kubeconfig (or $KUBECONFIG) is required")
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    manager = Manager(
        Kube(args.kubeconfig, field_manager=args.field_manager, discovery_interval_s=args.discovery_interval),
        max_backoff_s=args.max_backoff,
        target_selector=args.target_label_selector,
    )

    def _stop(signum, _frame):
        logging.getLogger("standin_metacontroller").info("signal %s: stopping", signum)
        manager.shutdown()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    manager.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
