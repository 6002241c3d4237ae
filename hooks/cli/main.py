"""`python -m hooks render FILE.yaml`, `python -m hooks serve`, `python -m hooks certs` and `python -m hooks docs`."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import sys

from hooks.settings import Settings


def is_loopback_bind(bind: str) -> bool:
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# gthread with TLS handshakes on the event loop, and Metacontroller's connections on threads of their own
# (hooks/server/tls_worker.py): stalled handshakes hold no thread.
TLS_WORKER = "hooks.server.tls_worker.TLSHandshakeWorker"


def gunicorn_argv(bind: str, workers: int, threads: int, tls_dir: str | None) -> list[str]:
    """gthread workers: a slow or idle client holds one thread (gunicorn hands a connection that sends
    nothing for 5 s back to its poller), not a whole worker, so /healthz and Metacontroller's calls go on.
    With TLS, the handshake runs on the worker's event loop with a deadline (TLS_WORKER)."""
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--worker-class",
        TLS_WORKER if tls_dir else "gthread",
        "--threads",
        str(threads),
        "--timeout",
        "30",
        "--graceful-timeout",
        "10",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
    ]
    if tls_dir:
        # cert-reqs 1 (CERT_OPTIONAL): a presented client certificate must chain to the install's CA;
        # the app answers 401 on hook routes to a connection without one (probes need none).
        argv += [
            "--certfile",
            os.path.join(tls_dir, "tls.crt"),
            "--keyfile",
            os.path.join(tls_dir, "tls.key"),
            "--ca-certs",
            os.path.join(tls_dir, "ca.crt"),
            "--cert-reqs",
            "1",
        ]
    return argv + ["hooks.server.app:create_app()"]


def serve(bind: str, workers: int, threads: int, tls_dir: str | None, insecure: bool) -> int:
    """Replace this process with gunicorn serving the app factory."""
    from hooks.server.caller_auth import METACONTROLLER_CLIENT_NAME

    env = dict(os.environ)
    env.pop("KAITO_HOOKS_CLIENT_NAMES", None)
    if tls_dir:
        env["KAITO_HOOKS_CLIENT_NAMES"] = METACONTROLLER_CLIENT_NAME
    elif not (insecure or is_loopback_bind(bind)):
        print(
            f"python -m hooks serve: refusing to serve the hooks on {bind} without authentication: give "
            "--tls-dir (mutual TLS with Metacontroller, as the install does) or bind to 127.0.0.1; "
            "--insecure-no-auth serves anyone who can connect (local experiments only)",
            file=sys.stderr,
        )
        return 2
    os.execve(sys.executable, gunicorn_argv(bind, workers, threads, tls_dir), env)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hooks", description="Render Workspaces, serve the hooks, regenerate README tables."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="print the children a Workspace file would get")
    r.add_argument("file")
    r.add_argument(
        "--node-provisioning",
        choices=("aks", "byo"),
        help="aks: Machines for missing nodes (default); byo: bring your own nodes, no Machines",
    )
    s = sub.add_parser("serve", help="run the hook server under gunicorn")
    s.add_argument("--bind", default=os.environ.get("KAITO_HOOKS_BIND", "0.0.0.0:8080"))
    s.add_argument("--workers", type=int, default=int(os.environ.get("KAITO_HOOKS_WORKERS", "2")))
    s.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("KAITO_HOOKS_THREADS", "8")),
        help="threads per worker (gthread): each slow client holds one",
    )
    s.add_argument(
        "--tls-dir",
        default=os.environ.get("KAITO_HOOKS_TLS_DIR") or None,
        help="directory with tls.crt, tls.key and ca.crt: serve HTTPS and require Metacontroller's "
        "client certificate on the hook routes (python -m hooks certs makes them)",
    )
    s.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback bind without --tls-dir (anyone who can connect may call the hooks)",
    )
    c = sub.add_parser("certs", help="print the mutual-TLS Secrets for Metacontroller and the hook server")
    c.add_argument("--namespace", default="kaito-system", help="the hook server's namespace")
    c.add_argument("--days", type=int, default=365, help="validity of the CA and both certificates")
    c.add_argument("--out-dir", default=None, help="write PEM files here instead of printing Secrets")
    c.add_argument("--extra-name", action="append", default=[], help="another server name or IP (e.g. 127.0.0.1)")
    d = sub.add_parser("docs", help="regenerate README.md's generated sections (--check: only compare)")
    d.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date, change nothing")
    d.add_argument("--readme", default="README.md")
    d.add_argument("--crd", default="metacontroller/workspace-crd.yaml")
    args = parser.parse_args(argv)

    if args.command == "docs":
        from hooks.cli.docs import run

        return run(args.readme, args.crd, check=args.check)

    if args.command == "render":
        from hooks.cli.render import render

        settings = Settings.from_env()
        if args.node_provisioning:
            settings = dataclasses.replace(settings, node_provisioning=args.node_provisioning)
        return render(args.file, settings)
    if args.command == "certs":
        from hooks.cli.certs import run as certs

        return certs(args.namespace, args.days, args.out_dir, tuple(args.extra_name))
    return serve(args.bind, args.workers, args.threads, args.tls_dir, args.insecure_no_auth)
