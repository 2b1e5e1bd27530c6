"""The commands that look after the store: ``migrate``, ``check-config``, ``keygen``,
``export``, ``import`` and ``history prune``."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import storage
from storage import HandleStore

from ..auth.secrets import KeyFileError, SecretKeeper
from ..config import Config, ConfigError
from ..native import signing
from ..native.site import SiteError, root_info, this_site
from ..ops.retention import prune
from ..service import HandleService
from .serve import tls_context, warn_about
from .stores import where, with_store
from .transfer import ImportFailed, export_store, export_to_path, import_file

__all__ = ["check_config", "export", "import_", "keygen", "migrate", "prune_history"]

log = logging.getLogger("handle_server")


def migrate(config: Config, *, check: bool) -> int:
    backend = config.storage.backend
    latest = storage.schema_version(backend)
    if check:

        async def report(store: HandleStore) -> int:
            print(f"{where(config)}: schema version {latest}, up to date")
            return 0

        status = with_store(config, report, migrate=False)
        return 1 if status == 2 else status

    async def done(store: HandleStore) -> int:
        was = store.schema_from
        if was == latest:
            print(f"{where(config)}: schema version {latest}, up to date")
        elif was == 0:
            print(f"{where(config)}: created schema version {latest}")
        else:
            print(f"{where(config)}: migrated schema version {was} to {latest}")
        return 0

    return with_store(config, done, migrate=True)


def check_config(config: Config) -> int:
    """What ``serve`` would check before it listens, and a summary. Exit code 0 when it would
    start, 2 for a mistake in the configuration or a schema it will not run on, 1 when the
    store cannot be reached."""
    warn_about(config)  # warnings go to the log (stderr) as when serving
    try:
        tls = tls_context(config)
    except ConfigError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    s = config.server
    print(f"{config.source}: configuration is valid")
    print(f"  listens on {s.host}:{s.port} ({'HTTPS' if tls else 'plain HTTP'})")
    print(f"  prefixes: {', '.join(config.handle.prefixes) or '(none)'}")
    print(f"  admins: {', '.join(a.id for a in config.admins) or '(none)'}")
    key_file = config.auth.key_file
    if not Path(key_file).exists():
        print(f"  server key: {key_file} does not exist yet; serve makes it (or keygen)")
    else:
        try:
            keeper = SecretKeeper.from_key_file(key_file)
        except KeyFileError as exc:
            print(f"handle-server: {exc}", file=sys.stderr)
            return 2
        print(f"  server key: {key_file}, key id {keeper.key_id.decode()}")
    if config.native.enabled:
        n = config.native
        print(
            f"  native protocol: port {n.port} ({'TCP' if n.tcp else ''}"
            f"{' and ' if n.tcp and n.udp else ''}{'UDP' if n.udp else ''})"
        )
        if not Path(n.key_file).exists():
            print(
                f"  native key: {n.key_file} does not exist yet; serve makes it "
                "(or keygen --native)"
            )
        else:
            try:
                key = signing.read_key_file(n.key_file)
                site = this_site(config, signing.encode_public_key(key.public_key()))
            except (signing.KeyFileError, SiteError) as exc:
                print(f"handle-server: {exc}", file=sys.stderr)
                return 2
            print(
                f"  native key: {n.key_file}; HS_SITE serial {site.serial} at "
                f"{site.servers[0].address}"
            )
    latest = storage.schema_version(config.storage.backend)
    if config.storage.backend == "sqlite" and not Path(config.storage.path).exists():
        print(f"  store: {config.storage.path} does not exist yet; serve creates it")
        return 0

    async def report(store: HandleStore) -> int:
        print(f"  store: {where(config)}, schema version {latest}, up to date")
        return 0

    return with_store(config, report, migrate=False)


def native_keygen(config: Config) -> int:
    """Make the native protocol's key pair (never over an existing file)."""
    path = config.native.key_file
    return _make_key(
        path,
        signing.make_key_file,
        f"made the native key pair {path}: back it up, and send this site's new HS_SITE "
        "(handle-server siteinfo) to the prefix registry",
    )


def _make_key(path: str, make: Callable[[str], None], done: str) -> int:
    try:
        make(path)
    except FileExistsError:
        print(f"handle-server keygen: {path} exists; it is not replaced", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"handle-server keygen: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(done)
    return 0


def siteinfo(config: Config, output: Path | None, *, form: str, public_key: Path | None) -> int:
    """Write this server's HS_SITE (``form``: ``bin``, the reference's binary record;
    ``json``, its JSON form; ``root_info``, a root_info naming this site the root), and, if
    asked, its public key in the reference's encoding (what its tools call pubkey.bin)."""
    try:
        key = signing.read_key_file(config.native.key_file)
        site = this_site(config, signing.encode_public_key(key.public_key()))
    except (signing.KeyFileError, SiteError) as exc:
        print(f"handle-server siteinfo: {exc}", file=sys.stderr)
        return 2
    if form == "json":
        data = (json.dumps(site.to_json(), indent=2) + "\n").encode()
    elif form == "root_info":
        data = root_info([site], timestamp=int(time.time()))
    else:
        data = site.encode()
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(data)
    if public_key is not None:
        public_key.write_bytes(signing.encode_public_key(key.public_key()))
    return 0


def keygen(config: Config, *, rekey_admins: bool) -> int:
    """Make the key file (never over an existing one); with ``rekey_admins``, keep the
    configured admins' secrets with it in the store."""
    path = config.auth.key_file
    if not rekey_admins:
        done = f"made the server key {path}: back it up apart from the store"
        return _make_key(path, SecretKeeper.make_key_file, done)
    try:
        keeper, made = SecretKeeper.load_or_make(path)
    except KeyFileError as exc:
        print(f"handle-server keygen: {exc}", file=sys.stderr)
        return 2

    async def rekey(store: HandleStore) -> int:
        await HandleService(store, config, keeper).home_prefixes(rekey=True)
        print(
            f"kept the secrets of {len(config.admins)} configured admin(s) with the key "
            f"{keeper.key_id.decode()} in {path}{' (made now)' if made else ''}"
        )
        return 0

    return with_store(config, rekey, migrate=False)


def export(config: Config, output: str | None, batch: int, *, history: bool = True) -> int:
    async def run(store: HandleStore) -> int:
        if output is None:
            count = await export_store(store, sys.stdout.buffer, batch=batch, history=history)
            sys.stdout.buffer.flush()
        else:
            count = await export_to_path(store, Path(output), batch=batch, history=history)
        log.info("exported %d handles%s", count, " with their histories" if history else "")
        return 0

    return with_store(config, run, migrate=False)


def import_(config: Config, path: Path, batch: int, replace: bool) -> int:
    if not path.is_file():
        print(f"handle-server: {path}: no such file", file=sys.stderr)
        return 2

    async def run(store: HandleStore) -> int:
        try:
            summary = await import_file(store, path, batch=batch, replace=replace)
        except ImportFailed as exc:
            s = exc.summary
            print(
                f"handle-server: {exc}\n"
                f"handle-server: lines 1-{s.lines} are stored ({s.result.created} created, "
                f"{s.result.replaced} replaced, {s.result.unchanged} already there, "
                f"{s.result.versions} versions of history added); fix the "
                "line and run the same command again: what is stored is recognised and skipped",
                file=sys.stderr,
            )
            return 1
        r = summary.result
        log.info(
            "imported %d lines: %d handles created, %d replaced, %d already there; "
            "%d versions of history added",
            summary.lines,
            r.created,
            r.replaced,
            r.unchanged,
            r.versions,
        )
        return 0

    return with_store(config, run, migrate=False)


def prune_history(config: Config, *, keep_versions: int | None, keep_days: int | None) -> int:
    """``handle-server history prune``: the bounds given, else ``[history]``'s."""
    versions = keep_versions if keep_versions is not None else config.history.keep_versions
    days = keep_days if keep_days is not None else config.history.keep_days
    if not (versions or days):
        print(
            "handle-server history prune: nothing bounds the history: set [history] "
            "keep_versions or keep_days, or give --keep-versions or --keep-days",
            file=sys.stderr,
        )
        return 2

    async def run(store: HandleStore) -> int:
        removed = await prune(store, keep_versions=versions, keep_days=days)
        bounds = [f"the last {versions} versions"] if versions else []
        bounds += [f"{days} days"] if days else []
        print(f"pruned {removed} versions from the history (kept {' and '.join(bounds)})")
        return 0

    return with_store(config, run, migrate=False)
