"""The `fedcurate` deployment commands (README's runbook): certs, keygen, register, superlink, supernode, launch.

    fedcurate certs --out certs --ca-dir ca --san superlink.example.org     # at the coordinator
    fedcurate keygen --site hospital-a --out keys                           # at a partner
    fedcurate launch --state superlink-state --config configs/clues-federated.toml --run-dir runs/x

Per command: `<name>_args(parser)` adds its arguments, `do_<name>(args) -> exit code` runs it. Handlers import
`fedcurate.server.certs` and `fedcurate.server.deploy` only when they run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fedcurate.common.config import load_config


def certs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="the SuperLink's directory: ca.crt, server.pem/.key, sites/")
    p.add_argument("--ca-dir", type=Path, default=None,
                   help="where the CA key lives (default: ca/ beside --out; reused if present; keep it offline)")
    p.add_argument("--san", default="", help="comma-separated DNS names / IPs the SuperNodes dial")
    p.add_argument("--sites", default="", help="with --demo: make these partners' key pairs here too")
    p.add_argument("--demo", action="store_true",
                   help="single-machine trials only: write partner private keys (demo-keys/ beside --out)")


def do_certs(args: argparse.Namespace) -> int:
    from fedcurate.server.certs import make_certs

    made = make_certs(args.out, [h for h in args.san.split(",") if h], [s for s in args.sites.split(",") if s],
                      ca_dir=args.ca_dir, demo=args.demo)
    print(f"CA: {made['ca']} (give to every partner); CA key: {made['ca_key']} (keep offline; the SuperLink "
          f"never reads it)\nSuperLink: {made['server_cert']}, {made['server_key']}")
    for site, key in made["site_keys"].items():  # type: ignore[union-attr]
        print(f"demo site {site}: private key {key} (single-machine trial only), public key registered")
    if not made["site_keys"]:
        print(f"next: each partner runs `fedcurate keygen --site NAME` and sends NAME.pub; register it with "
              f"`fedcurate register --certs {args.out} --site NAME --key NAME.pub`")
    return 0


def keygen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", required=True, help="this site's name, as the coordinator will register it")
    p.add_argument("--out", type=Path, default=Path("keys"), help="directory for <site> and <site>.pub (default keys/)")


def do_keygen(args: argparse.Namespace) -> int:
    from fedcurate.server.certs import fingerprint, load_public_key, make_site_key, public_path

    private = make_site_key(args.out, args.site)
    public = public_path(private)
    print_ = fingerprint(load_public_key(public))
    print(public.read_text(encoding="utf-8").strip())
    print(f"site {args.site}: private key {private} (mode 0600; never send it). Send {public} to the coordinator "
          f"and read them its fingerprint over another channel: {print_}")
    return 0


def register_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--certs", type=Path, required=True, help="the SuperLink's directory from `fedcurate certs`")
    p.add_argument("--site", required=True, help="the partner's site name")
    p.add_argument("--key", type=Path, required=True, help="the partner's public key (.pub from `fedcurate keygen`)")
    p.add_argument("--replace", action="store_true", help="swap the key of an already registered site")


def do_register(args: argparse.Namespace) -> int:
    from fedcurate.server.certs import fingerprint, load_public_key, register_site

    dest = register_site(args.certs, args.site, args.key, replace=args.replace)
    print_ = fingerprint(load_public_key(dest))
    print(f"site {args.site}: key {print_} registered in {dest}; compare the fingerprint with the partner's. "
          f"`fedcurate superlink` registers it with Flower at its next start.")
    return 0


def superlink_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--certs", type=Path, help="directory from `fedcurate certs` (ca.crt, server.pem/.key, sites/)")
    p.add_argument("--host", default="127.0.0.1", help="public bind address (0.0.0.0 for remote partners)")
    p.add_argument("--port", type=int, default=8000, help="public port: the Fleet API, through nginx")
    p.add_argument("--internal-port", type=int, default=None,
                   help="loopback port of Flower's own SuperLink (Fleet+Control+runtime; default PORT+1)")
    p.add_argument("--state", type=Path, default=Path("superlink-state"),
                   help="SuperLink database, site registry, SuperExec secret, proxy files, `flwr` profile (FLWR_HOME)")
    p.add_argument("--admin-network", action="append", default=[], metavar="CIDR",
                   help="also let this network reach the Control API through the public port (repeatable)")
    p.add_argument("--no-register", action="store_true", help="do not register <certs>/sites/*.pub")
    p.add_argument("--no-proxy", action="store_true",
                   help="serve Flower directly on HOST:PORT (Control API exposed: closed test networks only)")
    p.add_argument("--insecure", action="store_true", help="no TLS, no authentication, no proxy (closed test networks)")


def do_superlink(args: argparse.Namespace) -> int:
    from fedcurate.server import deploy

    if args.insecure:
        logging.getLogger(__name__).warning(deploy.INSECURE_WARNING + " The Control API is exposed as well.")
    elif args.no_proxy:
        logging.getLogger(__name__).warning("--no-proxy: Flower's Control API (run, stop, register nodes) answers "
                                            "anyone who reaches %s:%d. Closed test networks only.", args.host,
                                            args.port)
    return deploy.serve_superlink(args.certs, args.host, args.port, args.state, args.insecure,
                                  internal_port=args.internal_port, proxy=not (args.no_proxy or args.insecure),
                                  admin_networks=tuple(args.admin_network), register=not args.no_register,
                                  ready=lambda text: print(text, flush=True))


def supernode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
    p.add_argument("--ca", type=Path, help="the coordinator's ca.crt")
    p.add_argument("--key", type=Path, help="this site's private key (from `fedcurate keygen`)")
    p.add_argument("--site", required=True, help="this site's name")
    p.add_argument("--data", required=True, help="this site's data file")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="this site's output directory (default: ./fedcurate-site-SITE; never a path the coordinator sends)")
    p.add_argument("--test", help="this site's own held-out set, for evaluation.at-sites (never leaves the site)")
    p.add_argument("--port", type=int, default=9094, help="local Runtime API port (one per SuperNode on a host)")
    p.add_argument("--pin-app-hash", action="append", default=[], metavar="SHA256",
                   help="run only app bundles with this sha256 (repeatable; default: any bundle of the installed "
                        "fedcurate version -- its code is never run either way)")
    p.add_argument("--insecure", action="store_true", help="no TLS, no authentication (closed test networks)")


def do_supernode(args: argparse.Namespace) -> int:
    from fedcurate.server import deploy

    if args.insecure:
        logging.getLogger(__name__).warning(deploy.INSECURE_WARNING)
    run_dir = (args.run_dir or Path(f"fedcurate-site-{args.site}")).resolve()
    return deploy.serve_supernode(args.superlink, args.ca, args.key, args.site, args.data, run_dir,
                                  args.port, args.insecure, args.test, tuple(args.pin_app_hash))


def launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", type=Path, default=Path("superlink-state"),
                   help="FLWR_HOME holding the connection profile `fedcurate superlink` wrote")
    p.add_argument("--config", type=Path, required=True, help="experiment config, readable by the SuperLink")
    p.add_argument("--run-dir", type=Path, required=True, help="server run directory, at the SuperLink")
    p.add_argument("--reconnect-timeout", type=float, default=600.0,
                   help="seconds to wait for a lost SuperLink before giving up (exit 4)")
    p.add_argument("--resubmits", type=int, default=3, help="resubmissions after SuperLink restarts (default 3)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between status checks")


def do_launch(args: argparse.Namespace) -> int:
    from fedcurate.common.protocol.layout import PHASES
    from fedcurate.server import deploy

    cfg = load_config(args.config)  # every config problem now, not in the ServerApp
    last = cfg.run.stop_after or PHASES[-1]
    phases = PHASES[: PHASES.index(last) + 1]
    return deploy.follow_run(args.state, args.config, args.run_dir, phases, poll_s=args.poll,
                             reconnect_s=args.reconnect_timeout, resubmits=args.resubmits)
