"""`python -m greenai.sync`: send the MLflow writes greenai kept while a tracking server was away.

Any greenai command using the server sends them too, once it answers; this is the way to do it
by hand (as `wandb sync` does for offline runs), e.g. after the command that kept them ended.
Each server's writes wait in `.greenai/spool/<host>_<port>-<hash>/` of the folder the command
ran in (or $GREENAI_SPOOL_DIR), beside a file naming the server.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from greenai.errors import ConfigError, fail
from greenai.stores import spool
from greenai.stores.reachability import check_reachable
from greenai.stores.redaction import redact
from greenai.stores.url import StoreURL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m greenai.sync", description=__doc__.splitlines()[0])
    parser.add_argument("--spool", type=Path, default=None, help="the spool folder (default: .greenai/spool here)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="send only the writes kept for this server; needed where its URL held a password (never written down)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = (args.spool or spool.spool_root()).resolve()
    found = spool.folders(root)
    if args.tracking_uri:
        found = [f for f in found if f.name == spool.spool_folder(args.tracking_uri, root).name]
    if not found:
        print(f"nothing to send: no kept MLflow writes in {root}")
        return 0
    for folder in found:
        uri = args.tracking_uri or spool.saved_uri(folder) or ""
        if not uri or "***" in uri:
            fail(
                f"tracking.uri: the writes in {folder} were kept for {uri or 'a server'}, whose password greenai "
                "does not write down; pass --tracking-uri with it"
            )
        try:
            check_reachable(StoreURL.tracking(uri, Path.cwd()), "tracking.uri")
        except ConfigError as exc:
            fail(str(exc))
        sent = spool.send_folder(uri, folder)
        dropped = f"; {sent.dropped} refused by the server, dropped" if sent.dropped else ""
        print(f"sent {_count(sent.writes, 'write')} of {_count(len(sent.runs), 'run')} to {redact(uri)}{dropped}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


if __name__ == "__main__":
    raise SystemExit(main())
