"""A client no one here wrote: `openapi-python-client` generates one from the live
/openapi.json, and it alone drives register -> bundle -> claim (notice) -> claim check against a
real `copyledger serve` (issue #14 item 1). If the description lies about a body, a response or
the security scheme, the generated code fails here."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from copyledger.cli.main import app
from copyledger.client import check_claim_check
from copyledger.verify import verify_bundle
from tests.helpers import sha
from tests.server import ServerProcess

PACKAGE = "copyledger_generated_client"
# No formatter hooks (the generator would run ruff on its output); the time-stamp query and
# reply are bytes, which the generator knows as application/octet-stream.
CONFIG = ("post_hooks: []\ncontent_type_overrides:\n"
          "  application/timestamp-query: application/octet-stream\n"
          "  application/timestamp-reply: application/octet-stream\n")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("generated")
    data = root / "reg"
    runner = CliRunner()

    def cli(*args: str) -> dict[str, Any]:
        r = runner.invoke(app, [*args, "--data-dir", str(data), "--json"])
        assert r.exit_code == 0, r.stdout
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    log_key = cli("init")["verifier_key"]
    creator = cli("keys", "create", "--role", "creator", "--account", "ada")["key"]
    platform = cli("keys", "create", "--role", "platform", "--account", "tube")["key"]
    server = ServerProcess(data).start()
    try:
        yield {"root": root, "url": server.url, "log_key": log_key, "creator": creator,
               "platform": platform}
    finally:
        server.stop()


# openapi-python-client issue #1451 (fix proposed in its PR #1478): for a required body with
# several content types (our JSON-or-multipart uploads) its template reads `body_required`
# before setting it, so it writes `| Unset = UNSET` without importing `Unset`, and the module
# fails to import. Until a release fixes it, the one template line is corrected here, in a
# template override the generator's `--custom-template-path` loads; the rest is stock.
BUGGY = ("{%- for body in endpoint.bodies -%}{% set body_required = body_required and "
         "body.prop.required %}")
FIXED_FOR = "{%- for body in endpoint.bodies -%}"
BUGGY_IF = "{% if not body_required %} | Unset = UNSET{% endif %}"
FIXED_IF = ('{% if endpoint.bodies | rejectattr("prop.required") | list %} | Unset = UNSET'
            "{% endif %}")


def _template_fix(into: Path) -> list[str]:
    """`--custom-template-path` arguments with the corrected macro, or none once the installed
    generator no longer has the bug."""
    import openapi_python_client

    macros = Path(openapi_python_client.__file__).parent / "templates/endpoint_macros.py.jinja"
    text = macros.read_text()
    if BUGGY not in text:
        return []
    into.mkdir()
    (into / macros.name).write_text(text.replace(BUGGY, FIXED_FOR).replace(BUGGY_IF, FIXED_IF))
    return ["--custom-template-path", str(into)]


@pytest.fixture(scope="module")
def gen(served: dict[str, Any]) -> Iterator[Any]:
    """The generated package, written into a temporary directory and imported from there."""
    root: Path = served["root"]
    spec = root / "openapi.json"
    spec.write_bytes(httpx.get(served["url"] + "/openapi.json").content)
    (root / "config.yml").write_text(CONFIG)
    tool = Path(sys.executable).parent / "openapi-python-client"
    out = root / PACKAGE
    r = subprocess.run([str(tool), "generate", "--path", str(spec), "--meta", "none",
                        "--output-path", str(out), "--config", str(root / "config.yml"),
                        *_template_fix(root / "templates")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # Every operation was understood: the generator skips what it cannot describe, and says so.
    assert "WARNING" not in r.stdout + r.stderr, r.stdout + r.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_generated_client_registers_bundles_claims_and_checks(
        gen: Any, served: dict[str, Any]) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    register = importlib.import_module(f"{PACKAGE}.api.creators.register_work")
    get_bundle = importlib.import_module(f"{PACKAGE}.api.entries.get_bundle")
    record_claim = importlib.import_module(f"{PACKAGE}.api.platforms.record_claim")
    check_claim = importlib.import_module(f"{PACKAGE}.api.platforms.check_claim")
    whoami = importlib.import_module(f"{PACKAGE}.api.account.whoami")
    url = served["url"]
    creator = gen.AuthenticatedClient(base_url=url, token=served["creator"])
    platform = gen.AuthenticatedClient(base_url=url, token=served["platform"])
    anyone = gen.Client(base_url=url)
    content = sha("harbour at dawn")

    me = whoami.sync(client=creator)
    assert (me.account, me.role.value) == ("ada", "creator")

    # register: the body is built from the generated model, the work type from its enum
    work = models.WorkIn(sha256=content, title="Harbour at dawn", creators=["Ada Example"],
                         work_type=models.WorkInWorkType.IMAGE)
    registered = register.sync(client=creator, body=work)
    assert isinstance(registered, models.RegistrationOut)
    assert registered.seq == 0
    assert registered.receipt.tree_size >= 1
    assert registered.entry["registrant"] == "ada"

    # bundle: the parsed model, turned back into JSON, verifies offline under the pinned key
    bundle = get_bundle.sync(client=anyone, seq=registered.seq)
    assert isinstance(bundle, models.BundleOut)
    report = verify_bundle(bundle.to_dict(), file_sha256=content,
                           trusted_keys=[served["log_key"]])
    assert report.ok, report

    # claim: a complete DMCA notice on the registered work
    notice = models.ClaimIn(
        regime=models.ClaimInRegime.DMCA_512C3, notice_type=models.ClaimInNoticeType.NOTICE,
        claimant=models.ClaimInClaimant(
            name="Ada Example", email="ada@example.org", phone="+1 555 0100",
            address="1 Harbour St, Springfield",
            authority=models.ClaimInClaimantAuthority.OWNER, account="ada"),
        works=[models.ClaimInWorksType0Item(seq=registered.seq)],
        targets=[models.ClaimInTargetsType0Item(url="https://video.example/watch/123")],
        statements=models.ClaimInStatementsType0(good_faith=True, accuracy=True, perjury=True),
        signature="/Ada Example/")
    claim = record_claim.sync(client=platform, body=notice)
    assert isinstance(claim, models.RegistrationOut)
    assert claim.entry["kind"] == "claim" and claim.seq > registered.seq

    # claim check: the work is the claimant's, the content matches it, the claim is listed
    query = models.CheckIn(claimant="ada", work_seq=registered.seq,
                           content=models.CheckInContent.from_dict({"sha256": content}))
    answer = check_claim.sync(client=platform, body=query)
    assert isinstance(answer, models.ClaimCheckOut)
    assert answer.verdict == models.ClaimCheckOutVerdict.MATCH
    assert answer.claimant_is_registrant and answer.claimant_is_holder
    assert [c.seq for c in answer.claims] == [claim.seq]
    # and the parsed answer, as JSON again, is still the one the log key signed
    check_claim_check(answer.to_dict(), [served["log_key"]])


def test_generated_client_reads_our_problems(gen: Any, served: dict[str, Any]) -> None:
    """An error comes back as the documented Problem model, not as an unexpected status."""
    models = importlib.import_module(f"{PACKAGE}.models")
    register = importlib.import_module(f"{PACKAGE}.api.creators.register_work")
    platform = gen.AuthenticatedClient(base_url=served["url"], token=served["platform"])
    work = models.WorkIn(sha256=sha(1), title="t", creators=["c"],
                         work_type=models.WorkInWorkType.TEXT)
    problem = register.sync(client=platform, body=work)
    assert isinstance(problem, models.Problem)
    assert (problem.status, problem.title) == (403, "This API key may not do that")
