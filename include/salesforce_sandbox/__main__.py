"""Command line: ``python -m salesforce_sandbox`` (also installed as ``salesforce-sandbox``).

    serve    seed (unless the database holds data) and serve until Ctrl-C
    seed     generate data into a database file without serving
    stats    API calls counted by a running sandbox
    faults   show, set (KEY=VALUE ...) or --clear the fault switches of a running sandbox
    reset    re-seed a running sandbox
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .admin import AdminClient, AdminError
from .runtime import DEFAULT_DAILY_API_LIMIT
from .tls import CERT_FILE, DEFAULT_STATE_DIR

DEFAULT_PORT = 8443
DEFAULT_ORDERS = 500
DEFAULT_SEED = 7
CONNECTION_ID = "salesforce_default"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# -- commands --------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from .server import SandboxServer  # uvicorn and the store only when serving

    server = SandboxServer(
        port=args.port,
        db_path=args.db or ":memory:",
        orders=args.orders,
        seed=args.seed,
        with_imported_status=not args.no_imported_status,
        multi_currency=not args.single_currency,
        daily_api_limit=args.daily_api_limit,
        state_dir=args.state_dir,
        host=args.host,
        reseed=args.reseed,
        public_url=args.public_url,
        generator_options=_generator_options(args),
        proxy_port=args.proxy_port,
        pubsub_port=args.pubsub_port,
        event_retention_seconds=args.event_retention_hours * 3600,
    )
    stop = threading.Event()
    # Explicit handlers: a background job starts with SIGINT ignored, and `docker stop` sends SIGTERM.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    try:
        _print_connection(server, args)
        stop.wait()
        print("stopping", flush=True)
    finally:
        server.stop()
    return 0


def _seed(args: argparse.Namespace) -> int:
    from .runtime import SandboxRuntime
    from .schema import build_schema
    from .store import Store

    store = Store(args.db, schema=build_schema(with_imported_status=not args.no_imported_status, multi_currency=not args.single_currency))
    summary = SandboxRuntime(store).reseed(
        args.orders, args.seed, not args.no_imported_status, not args.single_currency, **_generator_options(args)
    )
    store.conn.close()
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _stats(args: argparse.Namespace) -> int:
    client = _admin(args)
    print(json.dumps(client.reset_stats() if args.reset else client.stats(), indent=2))
    return 0


def _faults(args: argparse.Namespace) -> int:
    client = _admin(args)
    if args.clear:
        settings = client.clear_faults()
    elif args.settings:
        settings = client.set_faults(**dict(_key_value(item) for item in args.settings))
    else:
        settings = client.faults()
    print(json.dumps(settings, indent=2))
    return 0


def _reset(args: argparse.Namespace) -> int:
    options = _generator_options(args)
    answer = _admin(args).reset(args.orders, args.seed, not args.no_imported_status, multi_currency=not args.single_currency, **options)
    print(json.dumps(answer, indent=2))
    return 0


# -- shared by the commands ------------------------------------------------------------------


def _generator_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"dirty_share": args.dirty_share} if args.dirty_share is not None else {}


def _admin(args: argparse.Namespace) -> AdminClient:
    ca_path = args.ca or (args.state_dir or Path.cwd() / DEFAULT_STATE_DIR) / CERT_FILE
    return AdminClient(args.url, ca_path)


def _key_value(item: str) -> tuple[str, Any]:
    """``latency_ms=200`` -> ("latency_ms", 200); values are JSON when they parse as JSON."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise SystemExit(f"expected KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _print_connection(server: Any, args: argparse.Namespace) -> None:
    connection = server.airflow_connection()
    creds = server.credentials
    data = f"existing data in {args.db}" if server.seed_summary is None else f"{args.orders} orders, seed {args.seed}"
    lines = [
        f"Salesforce sandbox listening on {server.url} ({data})",
        "",
        "Airflow connection, as an environment variable:",
        f"AIRFLOW_CONN_{CONNECTION_ID.upper()}={shlex.quote(json.dumps(connection))}",
        "",
        "or with the CLI:",
        shlex.join(
            [
                "airflow", "connections", "add", CONNECTION_ID,
                "--conn-type", "salesforce",
                "--conn-login", connection["login"],
                "--conn-password", connection["password"],
                "--conn-extra", json.dumps(connection["extra"]),
            ]
        ),
        "",
        f"Certificate (self-signed, its own CA): {server.ca_path}",
        "  trust it through the connection extra ca_bundle (set above), or for plain requests clients:",
        f"  export REQUESTS_CA_BUNDLE={shlex.quote(str(server.ca_path))}",
        "",
        "Credentials:",
        *(f"  {key}: {value}" for key, value in creds.items()),
        "",
        *_proxy_lines(server, args),
        f"Admin endpoint: {server.url}/__sandbox/ (stats, faults, reset), e.g.",
        f"  python -m salesforce_sandbox stats --url {server.url} --ca {shlex.quote(str(server.ca_path))}",
        "",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)


def _proxy_lines(server: Any, args: argparse.Namespace) -> list[str]:
    if args.proxy_port is None:
        return []
    return [
        f"HTTPS proxy for clients that log in at login.salesforce.com / test.salesforce.com: {server.proxy_url}",
        "  (their TLS ends at the sandbox; run them with this environment)",
        *(f"  export {key}={shlex.quote(value)}" for key, value in server.client_environment().items()),
        "",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salesforce-sandbox", description="A local Salesforce-compatible org.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def data_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--orders", type=int, default=DEFAULT_ORDERS, help="orders to generate")
        sub.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed of the generated data")
        sub.add_argument("--no-imported-status", action="store_true",
                         help="an org whose Order Status picklist has no 'Imported' value")
        sub.add_argument("--single-currency", action="store_true",
                         help="an org without multi-currency: no CurrencyIsoCode, no CurrencyType")
        sub.add_argument("--dirty-share", type=float, default=None,
                         help="share of orders with data problems the importer must catch")

    def remote_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", default=f"https://localhost:{DEFAULT_PORT}", help="the running sandbox")
        sub.add_argument("--ca", type=Path, default=None, help="its certificate (default: from --state-dir)")
        sub.add_argument("--state-dir", type=Path, default=None, help=f"default ./{DEFAULT_STATE_DIR}")

    serve = commands.add_parser("serve", help="seed and serve until Ctrl-C")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--public-url", help="the URL clients reach the sandbox at, when not https://localhost:<port> (e.g. https://sandbox:8443)")
    serve.add_argument("--proxy-port", type=int, default=None,
                       help="also run an HTTPS (CONNECT) proxy on this port (0 picks one) that takes clients "
                            "hard-coding login.salesforce.com to the sandbox")
    serve.add_argument("--pubsub-port", type=int, default=7443,
                       help="the Pub/Sub API (gRPC over TLS, Order change events) on this port (0 picks one)")
    serve.add_argument("--event-retention-hours", type=float, default=72.0,
                       help="how long published events stay replayable (Salesforce: 72)")
    serve.add_argument("--db", default=None, help="SQLite file (default: in memory)")
    serve.add_argument("--reseed", action="store_true", help="re-generate even if --db already holds data")
    serve.add_argument("--daily-api-limit", type=int, default=DEFAULT_DAILY_API_LIMIT)
    serve.add_argument("--state-dir", type=Path, default=None,
                       help=f"where the certificate and keys live (default ./{DEFAULT_STATE_DIR})")
    data_options(serve)
    serve.set_defaults(command=_serve)

    seed = commands.add_parser("seed", help="generate data into a database file")
    seed.add_argument("--db", required=True, help="SQLite file")
    data_options(seed)
    seed.set_defaults(command=_seed)

    stats = commands.add_parser("stats", help="API calls counted by a running sandbox")
    stats.add_argument("--reset", action="store_true", help="zero the counters (a new day)")
    remote_options(stats)
    stats.set_defaults(command=_stats)

    faults = commands.add_parser("faults", help="show, set or clear fault switches")
    faults.add_argument("settings", nargs="*", metavar="KEY=VALUE",
                        help="e.g. error_503_share=0.2 latency_ms=200 'lock_rows=[\"801...\"]'")
    faults.add_argument("--clear", action="store_true", help="clear every fault")
    remote_options(faults)
    faults.set_defaults(command=_faults)

    reset = commands.add_parser("reset", help="re-seed a running sandbox")
    data_options(reset)
    remote_options(reset)
    reset.set_defaults(command=_reset)
    return parser


if __name__ == "__main__":
    sys.exit(main())
