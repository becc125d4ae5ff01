"""The `copyledger` command: one small function per command, calling the packages."""

from __future__ import annotations

import gc
import hashlib
import json
import mimetypes
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from copyledger.api import settings as settings_mod
from copyledger.ledger import merkle, note
from copyledger.ledger.audit import audit as run_audit
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.verify import verify_receipt

app = typer.Typer(
    name="copyledger",
    help="Copyright evidence registry on an RFC 6962 transparency log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
notary_app = typer.Typer(help="The stand-alone notary (log key and TSA key holder).",
                         no_args_is_help=True)
app.add_typer(notary_app, name="notary")

out = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="COPYLEDGER_DATA_DIR", help="registry data directory"),
]
Database = Annotated[
    str | None,
    typer.Option("--database", envvar="COPYLEDGER_DATABASE",
                 help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite "
                 "in the data directory)"),
]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
NotaryUrl = Annotated[
    str | None,
    typer.Option("--notary-url", envvar="COPYLEDGER_NOTARY_URL",
                 help="sign through a stand-alone notary (http://host:port or unix:/path); "
                 "its token comes from COPYLEDGER_NOTARY_TOKEN"),
]
Server = Annotated[
    str, typer.Option("--server", envvar="COPYLEDGER_SERVER", help="registry URL")
]
Trust = Annotated[
    list[str] | None,
    typer.Option("--trust", envvar="COPYLEDGER_TRUST",
                 help="the log's verifier key to pin (name+id+key); default: ask the server"),
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="COPYLEDGER_API_KEY", help="Bearer API key")
]


def _die(msg: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(code)


def _emit(as_json: bool, obj: Any, human: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    elif human is not None:
        out.print(human)


def _settings(data_dir: Path | None, database: str | None = None, **kw: Any) -> Any:
    try:
        return settings_mod.load(data_dir, database=database, **kw)
    except CopyledgerError as e:
        _die(e.detail)


def _open_store(data_dir: Path | None, database: str | None) -> tuple[Any, Any]:
    """Settings and the store of an existing registry, or a clear error and exit 2."""
    from copyledger.api.registry import open_store

    s = _settings(data_dir, database)
    try:
        return s, open_store(s)
    except CopyledgerError as e:
        _die(e.detail)


@app.command()
def init(
    data_dir: DataDir = None,
    database: Database = None,
    origin: Annotated[
        str | None, typer.Option(help="log origin, e.g. registry.example/log")
    ] = None,
    notary_url: NotaryUrl = None,
    as_json: Json = False,
) -> None:
    """Create a registry: data directory, config, notary key (mode 0600) and database schema."""
    from copyledger.api.registry import init_data_dir

    s = _settings(data_dir, database, origin=origin, notary_url=notary_url)
    try:
        r = init_data_dir(s)
    except CopyledgerError as e:
        _die(e.detail)
    _emit(as_json, {"data_dir": str(s.data_dir), "origin": s.origin, "verifier_key":
                    r.verifier_key, "created_key": r.created_key, "database": _redact(s)},
          f"registry in [bold]{s.data_dir}[/bold]\norigin       {s.origin}\n"
          f"verifier key {r.verifier_key}\n"
          + ("new notary key written (mode 0600)" if r.created_key else "existing key kept"))


def _redact(s: Any) -> str:
    url: str = s.database_url
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}"
    return url


@app.command()
def serve(
    data_dir: DataDir = None,
    database: Database = None,
    host: Annotated[str | None, typer.Option(envvar="COPYLEDGER_HOST")] = None,
    port: Annotated[int | None, typer.Option(envvar="COPYLEDGER_PORT")] = None,
    notary_url: NotaryUrl = None,
) -> None:
    """Run the registry's HTTP API (creates the registry on first start)."""
    import uvicorn

    from copyledger.api.app import create_app, serving_app
    from copyledger.api.logs import configure
    from copyledger.api.registry import Registry

    s = _settings(data_dir, database, host=host, port=port, notary_url=notary_url)
    configure(s.log_level, s.log_json)
    try:
        reg = Registry.open(s)
    except CopyledgerError as e:
        _die(e.detail)
    # Long-lived objects (app, routes, schema) out of the collector's sight, and fewer young
    # collections: the hot path allocates many short-lived objects and makes no cycles.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    err.print(f"copyledger: serving {s.origin} from {s.data_dir} on http://{s.host}:{s.port} "
              f"(docs at /docs)")
    uvicorn.run(serving_app(create_app(reg)), host=s.host, port=s.port, log_level="warning",
                access_log=False)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="creator, platform, court or admin")],
    account: Annotated[str, typer.Option(help="the account the key acts for")] = "default",
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Mint an API key. It is printed once; only its hash is stored."""
    from copyledger.api.auth import mint_key

    _, store = _open_store(data_dir, database)
    try:
        secret, row = mint_key(store, role, account)
    except CopyledgerError as e:
        _die(e.detail)
    store.close()
    _emit(as_json, {"key": secret, "role": row.role, "account": row.account, "id": row.id},
          f"{secret}\n[dim]role {row.role}, account {row.account}; shown once, keep it safe[/dim]")


def _hash_files(paths: list[Path], show: bool) -> list[tuple[Path, str, int]]:
    total = sum(p.stat().st_size for p in paths)
    results = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=err, disable=not show, transient=True,
    ) as prog:
        task = prog.add_task("hashing", total=total)
        for p in paths:
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    prog.advance(task, len(chunk))
            results.append((p, h.hexdigest(), p.stat().st_size))
    return results


def _problem(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"{r.status_code} {body.get('title')}: {body.get('detail')}"
    except ValueError:
        return f"{r.status_code} {r.text[:200]}"


@app.command()
def register(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True)],
    title: Annotated[str | None, typer.Option(help="title (default: the file name)")] = None,
    creator: Annotated[
        list[str] | None, typer.Option("--creator", help="repeat per creator")
    ] = None,
    work_type: Annotated[str, typer.Option(help="text, image, audio, video, software, "
                                                 "dataset, other")] = "other",
    license: Annotated[str | None, typer.Option(help="licence, e.g. CC-BY-4.0")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    receipts: Annotated[Path | None, typer.Option(help="directory to save receipts in")] = None,
    trust: Trust = None,
    as_json: Json = False,
) -> None:
    """Hash files locally (they never leave this machine), register them, and check each
    receipt: entry bytes, file hash, inclusion proof and the checkpoint's signature."""
    if not api_key:
        _die("an API key is needed: --api-key or COPYLEDGER_API_KEY")
    hashed = _hash_files(files, show=not as_json and sys.stderr.isatty())
    results = []
    failed = False
    with httpx.Client(base_url=server, timeout=60,
                      headers={"Authorization": f"Bearer {api_key}"}) as client:
        verifiers, pinned = _verifiers(client, trust)
        for path, sha, size in hashed:
            body = {"sha256": sha, "size": size, "title": title or path.name,
                    "creators": creator or ["unknown"], "work_type": work_type}
            media = mimetypes.guess_type(path.name)[0]
            if media:
                body["media_type"] = media
                fps = _local_fingerprints(path, size, media)
                if fps:
                    body["fingerprints"] = fps
            if license:
                body["license"] = license
            res = _submit(client, "/v1/works", body, verifiers, path, sha, receipts)
            res["key_pinned"] = pinned
            failed = failed or "error" in res
            results.append(res)
    if as_json:
        _emit(True, results)
    else:
        _results_table(results, "registered, receipt verified")
        if not pinned:
            err.print("[yellow]receipts checked under the key the server itself published; "
                      "pin the log's key with --trust[/yellow]")
    if failed:
        raise typer.Exit(1)


def _local_fingerprints(path: Path, size: int, media: str) -> dict[str, Any]:
    """Perceptual fingerprints computed here, so the file need not leave this machine."""
    from copyledger.ledger import fingerprint as fp

    if size > 64 * 1024 * 1024:
        return {}
    try:
        return fp.fingerprints_for(path.read_bytes(), media)
    except CopyledgerError as e:
        err.print(f"[yellow]{path}: no fingerprints ({e.detail})[/yellow]")
        return {}


def _submit(
    client: httpx.Client,
    endpoint: str,
    body: dict[str, Any],
    verifiers: list[Any],
    path: Path,
    sha: str,
    receipts: Path | None,
) -> dict[str, Any]:
    """POST one registration or deposit and check its receipt; a result row either way."""
    try:
        r = client.post(endpoint, json=body)
    except httpx.HTTPError as e:
        _die(f"cannot reach {client.base_url}: {e}")
    if r.status_code != 201:
        return {"file": str(path), "sha256": sha, "error": _problem(r)}
    reg = r.json()
    try:
        verify_receipt(reg, verifiers, file_sha256=sha)
    except CopyledgerError as e:
        return {"file": str(path), "sha256": sha, "seq": reg.get("seq"),
                "error": f"receipt does NOT verify: {e.detail}"}
    if receipts:
        receipts.mkdir(parents=True, exist_ok=True)
        (receipts / f"{reg['seq']}.json").write_text(json.dumps(reg, indent=2))
    return {"file": str(path), "sha256": sha, "seq": reg["seq"], "leaf_hash": reg["leaf_hash"],
            "tree_size": reg["receipt"]["tree_size"]}


def _results_table(results: list[dict[str, Any]], ok_text: str) -> None:
    t = Table("file", "sha256", "seq", "result")
    for res in results:
        t.add_row(res["file"], res["sha256"][:16] + "…", str(res.get("seq", "")),
                  res.get("error", ok_text))
    out.print(t)


def _verifiers(client: httpx.Client, trust: list[str] | None) -> tuple[list[Any], bool]:
    """The keys to check signatures with: pinned ones, or (said so) the server's own."""
    try:
        if trust:
            return [note.parse_verifier_key(k) for k in trust], True
        return [note.parse_verifier_key(client.get("/v1/log").json()["verifier_key"])], False
    except CopyledgerError as e:
        _die(f"bad verifier key: {e.detail}")
    except (httpx.HTTPError, ValueError, KeyError) as e:
        _die(f"cannot read the log's key from {client.base_url}: {e}")


@app.command()
def evidence(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    captured_at: Annotated[str, typer.Option(help="RFC 3339 capture time")],
    method: Annotated[str, typer.Option(help="capture method, e.g. screenshot, warc, "
                                              "browser-export")],
    description: Annotated[str, typer.Option(help="what the capture shows")],
    url: Annotated[str | None, typer.Option(help="source URL of the capture")] = None,
    related_work: Annotated[int | None, typer.Option(help="seq of the work concerned")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    receipts: Annotated[Path | None, typer.Option(help="directory to save receipts in")] = None,
    trust: Trust = None,
    as_json: Json = False,
) -> None:
    """Deposit evidence: the file is hashed here; a WARC file's response records are hashed
    and listed one by one, so each captured page can be checked on its own."""
    from copyledger.ledger.warc import warc_records

    if not api_key:
        _die("an API key is needed: --api-key or COPYLEDGER_API_KEY")
    _, sha, size = _hash_files([file], show=not as_json and sys.stderr.isatty())[0]
    body: dict[str, Any] = {"sha256": sha, "size": size, "captured_at": captured_at,
                            "capture_method": method, "description": description}
    if url:
        body["source_url"] = url
    if related_work is not None:
        body["related_work"] = related_work
    if file.name.endswith((".warc", ".warc.gz")):
        try:
            body["warc_records"] = warc_records(file)
        except CopyledgerError as e:
            _die(e.detail)
    with httpx.Client(base_url=server, timeout=60,
                      headers={"Authorization": f"Bearer {api_key}"}) as client:
        verifiers, pinned = _verifiers(client, trust)
        res = _submit(client, "/v1/evidence", body, verifiers, file, sha, receipts)
    res["key_pinned"] = pinned
    res["warc_records"] = len(body.get("warc_records", []))
    if as_json:
        _emit(True, res)
    else:
        _results_table([res], "deposited, receipt verified"
                       + (f" ({res['warc_records']} WARC records)" if res["warc_records"] else ""))
    if "error" in res:
        raise typer.Exit(1)


@app.command()
def lookup(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    server: Server = "http://127.0.0.1:8000",
    as_json: Json = False,
) -> None:
    """Every registration, deposit and transfer of this exact content, oldest first."""
    sha = _sha256_file(file)
    try:
        r = httpx.get(f"{server}/v1/search", params={"sha256": sha}, timeout=30)
    except httpx.HTTPError as e:
        _die(f"cannot reach {server}: {e}")
    if r.status_code != 200:
        _die(_problem(r))
    found = r.json()["results"]
    rows = [{"seq": x["seq"], "kind": x["entry"]["kind"], "registrant": x["entry"]["registrant"],
             "received_at": x["entry"]["received_at"], "block_height": x["block_height"],
             "bundle": f"{server}/v1/entries/{x['seq']}/bundle"} for x in found]
    if as_json:
        _emit(True, {"sha256": sha, "results": rows, "truncated": r.json().get("truncated")})
        return
    if not rows:
        out.print(f"no entry registers {sha}")
        return
    t = Table("seq", "kind", "registrant", "received at", "bundle")
    for x in rows:
        t.add_row(str(x["seq"]), x["kind"], x["registrant"], x["received_at"], x["bundle"])
    out.print(f"SHA-256 {sha}: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, oldest first")
    out.print(t)


@app.command("check-claim")
def check_claim(
    claimant: Annotated[str, typer.Option(help="the claimant's account")],
    file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                              help="the disputed content")] = None,
    sha256: Annotated[str | None, typer.Option(help="or just its SHA-256")] = None,
    work_seq: Annotated[int | None, typer.Option(help="the claimed work's seq")] = None,
    work_sha256: Annotated[str | None, typer.Option(help="or its SHA-256")] = None,
    server: Server = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    trust: Trust = None,
    as_json: Json = False,
) -> None:
    """Check a takedown claim: registration, priority, holder, near-duplicate matches. The
    disputed file is fingerprinted here; only hashes are sent. The signed answer is verified."""
    from copyledger.ledger import claims as claims_mod
    from copyledger.ledger import jcs

    if not api_key:
        _die("an API key is needed: --api-key or COPYLEDGER_API_KEY")
    content: dict[str, Any] = {}
    if file is not None:
        _, content["sha256"], size = _hash_files([file], show=False)[0]
        media = mimetypes.guess_type(file.name)[0]
        if media:
            content.update(_local_fingerprints(file, size, media))
    elif sha256:
        content["sha256"] = sha256
    body: dict[str, Any] = {"claimant": claimant, "content": content}
    if work_seq is not None:
        body["work_seq"] = work_seq
    if work_sha256:
        body["work_sha256"] = work_sha256
    with httpx.Client(base_url=server, timeout=60,
                      headers={"Authorization": f"Bearer {api_key}"}) as client:
        verifiers, pinned = _verifiers(client, trust)
        try:
            r = client.post("/v1/claims/check", json=body)
        except httpx.HTTPError as e:
            _die(f"cannot reach {server}: {e}")
    if r.status_code != 200:
        _die(_problem(r))
    a = r.json()
    try:
        n, _ = note.verify_note(a["signature"], verifiers)
        _, _, digest = claims_mod.parse_check_note_text(n.text)
        unsigned = {k: v for k, v in a.items() if k != "signature"}
        if hashlib.sha256(jcs.canonicalize(unsigned)).digest() != digest:
            raise CopyledgerError("the signature covers a different answer")
    except CopyledgerError as e:
        _die(f"the answer's signature does NOT verify: {e.detail}", 1)
    a["signature_verified"], a["key_pinned"] = True, pinned
    if as_json:
        _emit(True, a)
        return
    e = a["earliest_registration"]
    out.print(f"verdict: [bold]{a['verdict']}[/bold]; work registered: {a['work_registered']}; "
              f"claimant is registrant: {a['claimant_is_registrant']}, holder: "
              f"{a['claimant_is_holder']}")
    if e:
        out.print(f"earliest registration of this content: seq {e['seq']} by {e['registrant']} "
                  f"at {e['registered_at']}")
    for m in a["matches"]:
        score = m.get("distance", m.get("similarity"))
        out.print(f"  seq {m['seq']}: {m['algorithm']} {score} (threshold {m['threshold']}) "
                  f"→ {m['verdict']}")
    for c in a["caveats"]:
        out.print(f"[dim]• {c}[/dim]")


@app.command()
def proof(
    seq: Annotated[int, typer.Argument(min=0)],
    tree_size: Annotated[int | None, typer.Option(help="default: the latest")] = None,
    server: Server = "http://127.0.0.1:8000",
    trust: Trust = None,
    as_json: Json = False,
) -> None:
    """Fetch an entry's inclusion proof and check it against the log's signed checkpoint."""
    with httpx.Client(base_url=server, timeout=30) as client:
        try:
            params = {"tree_size": tree_size} if tree_size else {}
            r = client.get(f"/v1/entries/{seq}/proof", params=params)
            if r.status_code != 200:
                _die(_problem(r))
            p = r.json()
        except httpx.HTTPError as e:
            _die(f"cannot reach {server}: {e}")
        verifiers, pinned = _verifiers(client, trust)
    try:
        merkle.verify_inclusion(seq, p["tree_size"], bytes.fromhex(p["leaf_hash"]),
                                [bytes.fromhex(h) for h in p["proof"]], bytes.fromhex(p["root"]))
        signed = None
        if p.get("checkpoint"):
            n, _ = note.verify_note(p["checkpoint"], verifiers)
            cp = note.parse_checkpoint(n.text)
            if (cp.size, cp.root.hex()) != (p["tree_size"], p["root"]):
                raise CopyledgerError("checkpoint does not match the proof")
            signed = True
    except CopyledgerError as e:
        _die(f"proof does NOT verify: {e.detail}", 1)
    p["verified"] = True
    p["checkpoint_verified"] = signed
    p["key_pinned"] = pinned
    _emit(as_json, p, f"seq {seq} is included in the tree of size {p['tree_size']} "
          f"(root {p['root'][:16]}…): proof of {len(p['proof'])} hashes verified"
          + ("; checkpoint signature verified" if signed else ""))


@app.command()
def audit(
    data_dir: DataDir = None,
    database: Database = None,
    as_json: Json = False,
) -> None:
    """Recompute every hash, node, block link, root and signature from the database."""
    from copyledger.api.registry import all_verifier_keys, tsa_roots_pem

    s, store = _open_store(data_dir, database)
    try:
        vkey = all_verifier_keys(s)
        roots = tsa_roots_pem(s)
    except CopyledgerError as e:
        _die(e.detail)
    show = not as_json and sys.stderr.isatty()
    with Progress(TextColumn("auditing"), BarColumn(), TextColumn("{task.completed} entries"),
                  console=err, disable=not show, transient=True) as prog:
        task = prog.add_task("audit", total=store.tree_size())
        rep = run_audit(store, vkey, progress=lambda n: prog.advance(task, n),
                        tsa_roots_pem=roots)
    store.close()
    obj = {k: getattr(rep, k) for k in ("ok", "entries", "blocks", "nodes", "tree_size", "root",
                                        "problem", "bad_seq", "bad_height", "checked")}
    if rep.ok:
        checks = "\n".join(f"  ✓ {c}" for c in rep.checked)
        _emit(as_json, obj, "[green]audit OK[/green]\n" + checks)
    else:
        where = (f"seq {rep.bad_seq}" if rep.bad_seq is not None
                 else f"block {rep.bad_height}" if rep.bad_height is not None else "log")
        _emit(as_json, obj, f"[red]audit FAILED[/red] at {where}: {rep.problem}")
        raise typer.Exit(1)


@app.command()
def bundle(
    seq: Annotated[int, typer.Argument(min=0)],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to save the bundle")],
    tlog_proof: Annotated[Path | None, typer.Option(
        help="also save the C2SP tlog-proof text form here")] = None,
    server: Server = "http://127.0.0.1:8000",
) -> None:
    """Save an entry's evidence bundle (verify it offline with `copyledger verify`)."""
    try:
        r = httpx.get(f"{server}/v1/entries/{seq}/bundle", timeout=30)
    except httpx.HTTPError as e:
        _die(f"cannot reach {server}: {e}")
    if r.status_code != 200:
        _die(_problem(r))
    output.write_text(json.dumps(r.json(), indent=2) + "\n")
    if tlog_proof is not None:
        tlog_proof.write_text(r.json()["tlog_proof"])
    err.print(f"bundle for seq {seq} saved to {output}")


def _sha256_file(path: Path) -> str:
    return _hash_files([path], show=sys.stderr.isatty())[0][1]


@app.command()
def verify(
    bundle_file: Annotated[Path, typer.Argument(metavar="BUNDLE", exists=True, dir_okay=False)],
    file: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False,
                                                help="the exhibit file to check")] = None,
    trust: Annotated[list[str] | None, typer.Option(
        help="a trusted log verifier key (name+id+key); repeatable")] = None,
    trust_file: Annotated[Path | None, typer.Option(
        help="file of trusted verifier keys, one per line")] = None,
    tsa_roots: Annotated[Path | None, typer.Option(
        help="PEM file of trusted TSA root certificates")] = None,
    as_json: Json = False,
) -> None:
    """Verify an evidence bundle offline, step by step; exit 0 only if every step holds."""
    from copyledger.ledger.verify import Status, verify_bundle

    try:
        doc = json.loads(bundle_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        _die(f"{bundle_file} is not JSON: {e}")
    keys = list(trust or [])
    if trust_file is not None:
        keys += [ln.strip() for ln in trust_file.read_text().splitlines() if ln.strip()]
    rep = verify_bundle(
        doc,
        file_sha256=_sha256_file(file) if file is not None else None,
        trusted_keys=keys,
        tsa_roots_pem=tsa_roots.read_bytes() if tsa_roots is not None else None,
    )
    if as_json:
        _emit(True, rep.to_json())
    else:
        marks = {Status.PASSED: "[green]✓[/green]", Status.FAILED: "[red]✗[/red]",
                 Status.SKIPPED: "[yellow]–[/yellow]", Status.NOT_CHECKED: "[dim]·[/dim]"}
        for st in rep.steps:
            detail = f"\n    {st.detail}" if st.detail else ""
            out.print(f"{marks[st.status]} {st.title}{detail}")
        if rep.ok:
            out.print("[green bold]VERIFIED[/green bold]"
                      + ("" if rep.trust == "pinned" else
                         " [yellow](log key taken from the bundle: pin it with --trust)[/yellow]"))
        else:
            failed = rep.failed
            out.print(f"[red bold]NOT VERIFIED[/red bold]: step '{failed.name if failed else '?'}' "
                      "failed")
    if not rep.ok:
        raise typer.Exit(1)


@notary_app.command("init")
def notary_init(
    data_dir: DataDir = None,
    origin: Annotated[str | None, typer.Option(help="the log origin it will sign for")] = None,
    as_json: Json = False,
) -> None:
    """Create the notary's keys (log key and TSA chain) in its own data directory."""
    from copyledger.api.registry import init_notary_keys
    from copyledger.api.settings import write_config

    s = _settings(data_dir, None, origin=origin)
    try:
        from copyledger.api.registry import check_origin

        s.data_dir.mkdir(parents=True, exist_ok=True)
        check_origin(s)
        if not s.config_path.exists():
            write_config(s)
        created, vkey = init_notary_keys(s)
    except CopyledgerError as e:
        _die(e.detail)
    _emit(as_json, {"data_dir": str(s.data_dir), "origin": s.origin, "verifier_key": vkey,
                    "created_key": created}, f"notary keys in {s.data_dir}\n{vkey}")


@notary_app.command("rotate")
def notary_rotate(
    data_dir: DataDir = None,
    database: Database = None,
    overlap_hours: Annotated[float, typer.Option(
        help="how long the old key keeps co-signing checkpoints")] = 168.0,
    as_json: Json = False,
) -> None:
    """Rotate the log key and the TSA certificate (with the server stopped). The rotation is
    recorded in the ledger, in a block signed by both keys."""
    from datetime import timedelta

    from copyledger.api.registry import Registry, init_notary_keys
    from copyledger.api.rotation import retired_keys, rotate, sha256_text
    from copyledger.ledger import entry as entry_mod
    from copyledger.ledger.sequencer import Pending

    s, store = _open_store(data_dir, database)
    try:
        store.acquire_sequencer_lock()  # refuse while a server sequences this log
        store.release_sequencer_lock()
        genesis = store.get_block(0) if store.latest_block() else None
    except CopyledgerError as e:
        _die(f"{e.detail} (stop the server before rotating)")
    finally:
        store.close()
    done = retired_keys(s)
    valid_from = done[-1].valid_until if done else (genesis.header.sealed_at if genesis else None)
    try:
        old = rotate(s, overlap=timedelta(hours=overlap_hours), valid_from=valid_from)
        _, new_vkey = init_notary_keys(s)
        reg = Registry.open(s)
    except CopyledgerError as e:
        _die(e.detail)
    reg.start()
    try:
        entry = {
            "schema": entry_mod.SCHEMA, "kind": "rotation", "registrant": "notary",
            "received_at": entry_mod.utc_now(), "content": {"sha256": sha256_text(new_vkey)},
            "old_verifier_key": old.verifier_key, "new_verifier_key": new_vkey,
            "old_tsa_root_sha256": sha256_text(old.tsa_root),
            "new_tsa_root_sha256": sha256_text((s.tsa_dir / "root.pem").read_text()),
            "overlap_until": old.overlap_until,
        }
        entry, data = entry_mod.encode(entry)
        receipt = reg.sequencer.submit(Pending(data, "rotation", sha256_text(new_vkey),
                                               "notary")).result(60)
    finally:
        reg.stop()
    _emit(as_json, {"old_verifier_key": old.verifier_key, "new_verifier_key": new_vkey,
                    "overlap_until": old.overlap_until, "seq": receipt.seq,
                    "block_height": receipt.block_height},
          f"rotated: new key {new_vkey}\nold key co-signs until {old.overlap_until}; "
          f"recorded as entry {receipt.seq}")


def _restrict_socket(path: str) -> None:
    """uvicorn makes its Unix socket mode 0666 after binding it; make it 0600 (this user only)
    as soon as it appears."""
    import threading
    import time

    def fix() -> None:
        for _ in range(600):
            if os.path.exists(path):
                time.sleep(0.05)  # let uvicorn's own chmod happen first
                os.chmod(path, 0o600)
                return
            time.sleep(0.05)

    if os.path.exists(path):
        os.unlink(path)
    threading.Thread(target=fix, daemon=True).start()


@notary_app.command("serve")
def notary_serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8100,
    uds: Annotated[str | None, typer.Option(help="serve on this Unix socket instead")] = None,
) -> None:
    """Run the stand-alone notary; clients authenticate with COPYLEDGER_NOTARY_TOKEN."""
    import uvicorn

    from copyledger.api.logs import configure
    from copyledger.api.registry import load_signer, load_tsa_identity
    from copyledger.notary.service import create_notary_app
    from copyledger.notary.tsa import TimeStampAuthority

    s = _settings(data_dir, None)
    configure(s.log_level, s.log_json)
    token = os.environ.get(s.notary_token_env, "")
    try:
        app_ = create_notary_app(load_signer(s), TimeStampAuthority(load_tsa_identity(s)), token)
    except CopyledgerError as e:
        _die(e.detail)
    where = f"unix:{uds}" if uds else f"http://{host}:{port}"
    err.print(f"copyledger notary for {s.origin} on {where}")
    if uds:
        _restrict_socket(uds)
        uvicorn.run(app_, uds=uds, log_level="warning", access_log=False)
    else:
        uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


def main() -> None:  # pragma: no cover - console entry
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
