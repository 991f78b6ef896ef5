"""The web UI, driven in real headless Chromium (Debian's ``/usr/bin/chromium``) against the
server started for real on loopback, over a registry that tells the demo's story: an extract,
cleaned and split by shared steps, a model trained on it, approved by the risk officer,
deployed and serving a traced prediction; a second version waiting for approval.

Each test saves a screenshot of the pages it visits under ``test-output/ui/`` (ignored by git).
Under ``CI=true`` a missing Chromium or Playwright is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from tests.helpers import LoopbackHTTP, free_port, serve_app

from modelledger import Registry, create_identity
from modelledger.server import API_PREFIX, create_app

CHROMIUM = os.environ.get("MODELLEDGER_TEST_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "ui"
DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"

# The data side of credit-risk v1's lineage, in the tests' registry and in the demo's alike:
# the source, the raw and clean data, one split step (drawn once) and the two sets it made.
SPLIT = "datasets:/applications-holdout/1#step1"
DATA_NODES = {
    ("source:datasets:/applications-raw/1", "source"),
    ("datasets:/applications-raw/1", "dataset"),
    ("datasets:/applications-clean/1#step1", "step"),
    ("datasets:/applications-clean/1", "dataset"),
    (SPLIT, "step"),
    ("datasets:/applications-train/1", "dataset"),
    ("datasets:/applications-holdout/1", "dataset"),
}

SCIENTIST = "alice@example.com"  # an admin of every model (enrolled by conftest's enrol_cast)
OFFICER = "officer@bank.example"
VIEWER = "viewer@bank.example"


@dataclass
class Scenario:
    url: str
    tokens: dict[str, str]  # member -> API token
    prediction_id: str
    revision: str | None  # the git revision the manifest recorded
    registry: Registry  # the scientist's view, for checks through the Python API


def _applications(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "application_id": np.arange(1000, 1000 + n),
            "age": rng.integers(18, 75, n),
            "income": rng.normal(52_000, 15_000, n).round(2),
            "loan_amount": rng.normal(12_000, 6_000, n).clip(500).round(2),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], n),
        }
    )
    score = frame.income / 10_000 - frame.loan_amount / 4_000 + (frame.employment == "salaried") * 1.5
    frame["defaulted"] = (score + rng.normal(0, 1, n) > 3).astype(int)
    return pd.concat([frame, frame.head(5)], ignore_index=True)  # an extract with duplicates


def _training_repo(tmp: Path) -> tuple[Path, str]:
    """A git repository holding the training script; returns the script and its revision."""
    repo = tmp / "credit-models"
    repo.mkdir()
    script = repo / "train.py"
    script.write_text("# trains the credit-risk model\n")
    git = ["git", "-C", str(repo), "-c", "user.name=ci", "-c", "user.email=ci@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run(
        [*git, "remote", "add", "origin", "https://git.bank.example/credit-models.git"], check=True
    )
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "train"], check=True)
    revision = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return script, revision.stdout.strip()


def build_scenario(tmp: Path, db_url: str) -> tuple[Registry, Registry, dict[str, str], str, str]:
    """The demo's story in a registry at ``db_url``: returns the scientist's registry, the
    server's (signing with a gateway key), a token per member, a prediction id and the git
    revision the versions were trained at."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from tests.conftest import enrol_cast

    art = str(tmp / "artifacts")
    enrol_cast(db_url, art)
    alice = Registry.open(db_url, artifacts=art, actor=SCIENTIST)
    keys = {}
    for name, roles, models in (
        (OFFICER, ["approver", "deployer"], ["credit-*"]),
        (VIEWER, ["viewer"], ["*"]),
        ("gateway@example.com", ["gateway"], ["*"]),
    ):
        keys[name] = tmp / f"{name}.key"
        _path, _kid, pem = create_identity(name, keys[name])
        alice.enrol(name, pem, roles=roles, models=models)
    officer = Registry.open(db_url, artifacts=art, identity=keys[OFFICER])

    extract = _applications()
    raw = alice.datasets.register(
        "applications-raw",
        extract,
        source={"uri": "postgresql://dwh.bank.example/lending", "kind": "query", "query": "SELECT *"},
    )
    clean_frame = extract.drop_duplicates(subset="application_id").reset_index(drop=True)
    clean = alice.datasets.register(
        "applications-clean",
        clean_frame,
        steps=[
            {
                "name": "drop-duplicates",
                "kind": "deduplicate",
                "params": {"subset": ["application_id"]},
                "inputs": [raw.uri],
            }
        ],
    )
    split = {
        "name": "split",
        "kind": "train_test_split",
        "params": {"test_size": 0.25},
        "inputs": [clean.uri],
    }
    train = alice.datasets.register("applications-train", clean_frame.iloc[:225], steps=[split])
    holdout = alice.datasets.register("applications-holdout", clean_frame.iloc[225:], steps=[split])

    script, revision = _training_repo(tmp)
    features = ["age", "income", "loan_amount"]
    X, y = clean_frame.iloc[:225][features], clean_frame.iloc[:225]["defaulted"]
    data = {"train": train, "holdout": holdout}
    alice.create_model("credit-risk", description="Probability of default", tags={"team": "credit"})
    for c, auc in ((0.5, 0.81), (2.0, 0.84)):
        pipeline = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=c))]).fit(X, y)
        mv = alice.register(
            "credit-risk",
            pipeline,
            sample_input=X.head(5),
            params={"C": c},
            metrics={"auc_holdout": auc},
            datasets=data,
            code_path=script,
        )
        if mv.version == 1:
            officer.approve(mv.uri, reason="Reviewed holdout AUC, MRM-114")
            officer.deploy(mv.uri, reason="Q4 release")
    alice.create_model("fraud-score", tags={"team": "fraud"})
    alice.register("fraud-score", lambda rows: rows, capture=False)
    with alice.load("models:/credit-risk@production", capture=True, flush_rows=1) as served:
        prediction_id = served.predict(X.head(1)).receipts[0].prediction_id
    tokens = {name: alice.create_token(name)[0] for name in (SCIENTIST, OFFICER, VIEWER)}
    server = Registry.open(db_url, artifacts=art, identity=keys["gateway@example.com"])
    officer.close()
    return alice, server, tokens, prediction_id, revision


# ---------------------------------------------------------------------------- browser and server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright: never a downloaded browser."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the playwright package is not installed (pip install -e '.[dev]')"
    if problem is None and not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if problem is not None:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        # as root (CI containers) Chromium refuses to start with its sandbox on
        sandbox = [] if os.geteuid() != 0 else ["--no-sandbox"]
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=sandbox)
        yield launched
        launched.close()


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    alice, server, tokens, prediction_id, revision = build_scenario(
        tmp_path, f"sqlite:///{tmp_path / 'r.db'}"
    )
    with serve_app(create_app(server)) as url:
        yield Scenario(url, tokens, prediction_id, revision, alice)
    server.close()
    alice.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, f"the page raised: {errors}"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def ready(page: Any, prefix: str, *, exact: bool = False) -> None:
    """Wait until the page for a route starting with ``prefix`` (or exactly that) has rendered."""
    match = "=" if exact else "^="
    page.wait_for_selector(f'main[data-ready{match}"{prefix}"]', state="attached", timeout=15_000)


def visit(page: Any, scenario: Scenario, route: str) -> None:
    page.goto(f"{scenario.url}/ui/#/{route}")
    ready(page, f"#/{route}", exact=True)


def sign_in(page: Any, scenario: Scenario, member: str) -> None:
    page.goto(f"{scenario.url}/ui/#/signin")
    page.get_by_label("API token or OIDC token").fill(scenario.tokens[member])
    page.get_by_role("button", name="Sign in").click()
    ready(page, "#/models")
    assert member in page.locator("#signed-in-as").inner_text()


def rows(page: Any, selector: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in row.locator("td").all_inner_texts()]
        for row in page.locator(f"{selector} tbody tr").all()
    ]


def act(page: Any, button: str, reason: str, **fields: str) -> None:
    """Open an action's dialog, fill it and confirm."""
    page.get_by_role("button", name=f"{button}…").click()
    dialog = page.locator("dialog[open]")
    for label, value in fields.items():
        dialog.get_by_label(label).fill(value)
    dialog.get_by_label("Reason (recorded in the ledger)").fill(reason)
    dialog.get_by_role("button", name=button, exact=True).click()


# ---------------------------------------------------------------------------- tests


def test_the_server_serves_the_page_with_its_security_headers(scenario: Scenario) -> None:
    root = httpx.get(scenario.url + "/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = httpx.get(scenario.url + "/ui/")
    assert page.status_code == 200 and '<main id="main"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(scenario.url + "/ui/static/js/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    # the page is not part of the API: its routes stay out of the OpenAPI document
    paths = httpx.get(scenario.url + API_PREFIX + "/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]


def test_browse_models_versions_data_and_the_audit_log(page: Any, scenario: Scenario) -> None:
    sign_in(page, scenario, SCIENTIST)
    assert [r[0] for r in rows(page, "#models")] == ["credit-risk", "fraud-score"]
    shot(page, "models")
    page.get_by_label("Name starts with").fill("cred")
    page.get_by_role("button", name="Search").click()
    ready(page, "#/models?prefix=cred")
    assert [r[0] for r in rows(page, "#models")] == ["credit-risk"]
    visit(page, scenario, "models?tag=team%3Dfraud")
    assert [r[0] for r in rows(page, "#models")] == ["fraud-score"]
    visit(page, scenario, "models?limit=1")
    assert [r[0] for r in rows(page, "#models")] == ["credit-risk"]
    page.get_by_role("link", name="Next page").click()
    ready(page, "#/models?limit=1&cursor=")
    assert [r[0] for r in rows(page, "#models")] == ["fraud-score"]

    visit(page, scenario, "models")
    page.get_by_role("link", name="credit-risk", exact=True).click()
    ready(page, "#/models/credit-risk")
    versions = rows(page, "#versions")
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in versions] == [
        ("v2", "validated", "—", "0.84", SCIENTIST),
        ("v1", "deployed", "@production", "0.81", SCIENTIST),
    ]
    assert rows(page, "#aliases")[0][:3] == ["@production", "v1", OFFICER]
    shot(page, "model")

    page.locator("#versions").get_by_role("link", name="v1").click()
    ready(page, "#/models/credit-risk/versions/1")
    mv = scenario.registry.get_version("credit-risk", 1)
    assert page.locator("#revision").inner_text() == scenario.revision
    assert (
        "https://git.bank.example/credit-models.git" in page.get_by_role("region", name="Code").inner_text()
    )
    assert "clean" in page.get_by_role("region", name="Code").inner_text()
    assert [(r[0], r[1]) for r in rows(page, "#datasets")] == [
        ("train", "datasets:/applications-train/1"),
        ("holdout", "datasets:/applications-holdout/1"),
    ]
    assert [(r[0], r[2]) for r in rows(page, "#files")] == [(f.path, f.sha256) for f in mv.files]
    timeline = page.locator("#timeline li").all_inner_texts()
    approved = next(t for t in timeline if "version.approved" in t)
    assert OFFICER in approved and "Reviewed holdout AUC, MRM-114" in approved
    assert "deployment.deployed" in timeline[-1] and "Q4 release" in timeline[-1]
    summary = page.get_by_role("region", name="Summary").inner_text()
    assert f"Approved by\t{OFFICER}" in summary
    shot(page, "version")
    # readable in a narrow window: nothing but the wide tables' own boxes scrolls sideways
    page.set_viewport_size({"width": 380, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    shot(page, "version-narrow")
    page.set_viewport_size({"width": 1280, "height": 900})

    visit(page, scenario, "models/credit-risk/versions/2")
    page.get_by_role("link", name="Compare with v1").click()
    ready(page, "#/diff?a=")
    params = page.locator("[data-section=parameters] tbody tr").all_inner_texts()
    assert [p.split("\t") for p in params] == [["C", "0.5", "2"]]
    assert page.locator("[data-section=parameters] del").inner_text() == "0.5"
    assert page.locator("[data-section=metrics] ins").inner_text() == "0.84"
    shot(page, "diff")

    visit(page, scenario, "datasets/applications-train/versions/1")
    assert [r[0] for r in rows(page, "#schema")] == [
        "application_id", "age", "income", "loan_amount", "employment", "defaulted"
    ]  # fmt: skip
    assert len(rows(page, "#preview")) == 20
    assert "of 225" in page.get_by_role("region", name=re.compile("Preview")).inner_text()
    assert [(r[0], r[1]) for r in rows(page, "#used-by")] == [
        ("models:/credit-risk/1", "train"),
        ("models:/credit-risk/2", "train"),
    ]
    assert "split" in rows(page, ".steps")[0][0]
    shot(page, "dataset")

    visit(page, scenario, f"audit?actor={OFFICER}")
    audited = rows(page, "#audit")
    assert [r[3] for r in audited] == ["version.approved", "deployment.deployed"]
    assert {r[2] for r in audited} == {OFFICER}
    shot(page, "audit")

    deployed_at = scenario.registry.alias_history("credit-risk", "production")[0].time
    visit(page, scenario, "at?model=credit-risk&alias=production&time=2000-01-01T00%3A00%3A00Z")
    assert "No version held @production" in page.locator("#alias-at").inner_text()
    visit(page, scenario, f"at?model=credit-risk&alias=production&time={deployed_at}")
    assert "held version 1" in page.locator("#alias-at").inner_text()
    shot(page, "production-at")


def test_four_eyes_refusal_protected_alias_and_approval(page: Any, scenario: Scenario) -> None:
    sign_in(page, scenario, SCIENTIST)
    visit(page, scenario, "models/credit-risk/versions/2")
    act(page, "Approve", "my own review")
    refusal = page.get_by_role("alert")
    assert "Refused by the four-eyes rule" in refusal.inner_text()
    assert "may not approve it too" in refusal.inner_text()
    assert page.locator("h1 .badge").inner_text() == "validated"
    shot(page, "four-eyes-refusal")
    act(page, "Set alias", "straight to production", Alias="production")
    protected = page.get_by_role("alert").filter(has_text="Refused: this alias is protected")
    protected.wait_for()
    assert "@production is protected" in protected.inner_text()
    assert scenario.registry.state("models:/credit-risk/2").stage == "validated"

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, scenario, OFFICER)
    visit(page, scenario, "models/credit-risk/versions/2")
    # with the keyboard only: the dialog takes the focus, Tab reaches its buttons
    page.get_by_role("button", name="Approve…").focus()
    page.keyboard.press("Enter")
    page.keyboard.type("Reviewed the challenger's holdout report")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    event = page.locator("#ledger-event")
    event.wait_for()
    text = event.inner_text()
    assert "version.approved" in text and OFFICER in text and "challenger's holdout report" in text
    assert page.locator("h1 .badge").inner_text() == "approved"
    shot(page, "approved")
    state = scenario.registry.state("models:/credit-risk/2")
    assert (state.stage, state.approved_by) == ("approved", OFFICER)


def test_deploy_and_roll_back(page: Any, scenario: Scenario) -> None:
    approved = httpx.post(
        f"{scenario.url}{API_PREFIX}/models/credit-risk/versions/2/approve",
        headers={"Authorization": f"Bearer {scenario.tokens[OFFICER]}"},
        json={"reason": "challenger reviewed"},
    )
    assert approved.status_code == 200, approved.text
    sign_in(page, scenario, OFFICER)
    visit(page, scenario, "models/credit-risk/versions/2")
    act(page, "Deploy", "release 8", Alias="production")
    event = page.locator("#ledger-event").inner_text()
    assert "deployment.deployed" in event and "release 8" in event
    assert page.locator("h1 .badge").inner_text() == "deployed"
    assert scenario.registry.get_version("models:/credit-risk@production").version == 2
    shot(page, "deployed")

    visit(page, scenario, "models/credit-risk")
    assert rows(page, "#aliases")[0][:2] == ["@production", "v2"]
    act(page, "Roll back", "latency regression", Alias="production")
    event = page.locator("#ledger-event").inner_text()
    assert "deployment.rolled_back" in event and "latency regression" in event
    assert rows(page, "#aliases")[0][:2] == ["@production", "v1"]
    assert scenario.registry.get_version("models:/credit-risk@production").version == 1
    shot(page, "rolled-back")


def _graph(page: Any) -> tuple[set[tuple[str, str]], set[tuple[str, str, str]]]:
    data = page.evaluate(
        """() => {
            const cy = window.modelledgerGraph;
            return {
                nodes: cy.nodes().map((n) => [n.id(), n.data("kind")]),
                edges: cy.edges().map((e) => [e.data("source"), e.data("target"), e.data("label")]),
            };
        }"""
    )
    return {tuple(n) for n in data["nodes"]}, {tuple(e) for e in data["edges"]}


def test_lineage_graph_of_a_version_and_of_a_data_set(page: Any, scenario: Scenario, tmp_path: Path) -> None:
    sign_in(page, scenario, SCIENTIST)
    visit(page, scenario, "models/credit-risk/versions/1/lineage")
    page.locator("#export-svg").wait_for()
    nodes, edges = _graph(page)
    assert nodes == DATA_NODES | {
        ("models:/credit-risk/1#step1", "step"),
        ("models:/credit-risk/1", "model"),
        ("alias:credit-risk@production", "deployment"),
    }
    assert edges == {
        ("source:datasets:/applications-raw/1", "datasets:/applications-raw/1", "extracted"),
        ("datasets:/applications-raw/1", "datasets:/applications-clean/1#step1", "input"),
        ("datasets:/applications-clean/1#step1", "datasets:/applications-clean/1", "produced"),
        ("datasets:/applications-clean/1", SPLIT, "input"),
        (SPLIT, "datasets:/applications-train/1", "produced"),  # one split step, drawn once,
        (SPLIT, "datasets:/applications-holdout/1", "produced"),  # made both sets
        ("datasets:/applications-train/1", "models:/credit-risk/1#step1", "train"),
        ("models:/credit-risk/1#step1", "models:/credit-risk/1", "fit"),
        ("datasets:/applications-holdout/1", "models:/credit-risk/1", "holdout"),
        ("models:/credit-risk/1", "alias:credit-risk@production", "deployed"),
    }
    # laid out left to right by dagre: every edge goes rightwards
    positions = page.evaluate(
        "() => Object.fromEntries(window.modelledgerGraph.nodes().map((n) => [n.id(), n.position().x]))"
    )
    assert all(positions[a] < positions[b] for a, b, _label in edges)
    shot(page, "lineage")

    with page.expect_download() as download:
        page.locator("#export-svg").click()
    svg = tmp_path / "lineage.svg"
    download.value.save_as(svg)
    text = svg.read_text()
    assert text.startswith("<svg") and text.count('<g class="node"') == len(nodes)
    assert text.count('<g class="edge"') == len(edges)
    assert 'data-id="datasets:/applications-train/1"' in text

    # a click on a node opens its page (after Fit, which brings every node into view)
    page.get_by_role("button", name="Fit").click()
    box = page.locator("#graph").bounding_box()
    spot = page.evaluate(
        "() => window.modelledgerGraph.getElementById('datasets:/applications-train/1').renderedPosition()"
    )
    page.mouse.click(box["x"] + spot["x"], box["y"] + spot["y"])
    ready(page, "#/datasets/applications-train/versions/1")
    assert page.locator("h1").inner_text() == "datasets:/applications-train/1"

    visit(page, scenario, "datasets/applications-raw/versions/1/lineage")
    page.locator("#export-svg").wait_for()
    nodes, edges = _graph(page)
    assert {n for n, kind in nodes if kind in ("model", "deployment")} == {
        "models:/credit-risk/1",
        "models:/credit-risk/2",
        "alias:credit-risk@production",
    }
    assert ("models:/credit-risk/1", "alias:credit-risk@production", "deployed") in edges
    shot(page, "dataset-lineage")


def test_trace_of_a_prediction_and_a_receipt_file(page: Any, scenario: Scenario, tmp_path: Path) -> None:
    sign_in(page, scenario, OFFICER)
    # the officer's roles cover credit-* only: nothing else shows, and a link to it is refused
    assert [r[0] for r in rows(page, "#models")] == ["credit-risk"]
    assert page.get_by_role("link", name="Data sets").count() == 0
    visit(page, scenario, "models/fraud-score")
    assert "Not allowed (403)" in page.get_by_role("alert").inner_text()
    assert page.locator("#versions").count() == 0
    page.get_by_role("link", name="Trace a prediction").click()
    ready(page, "#/trace")
    page.get_by_label("Prediction id").fill(scenario.prediction_id)
    page.get_by_role("button", name="Trace").click()
    ready(page, "#/trace?id=")
    assert page.locator("#receipt-validity").inner_text().startswith("The receipt is valid")
    assert page.locator("#approved-by").inner_text() == OFFICER
    assert page.locator("#trace-revision").inner_text() == scenario.revision
    used = rows(page, "#trace-datasets")
    assert {(r[0], r[1]) for r in used} == {
        ("train", "datasets:/applications-train/1"),
        ("holdout", "datasets:/applications-holdout/1"),
    }
    made_by = " ".join(r[4] for r in used)
    assert "split (train_test_split) from datasets:/applications-clean/1" in made_by
    assert "scale" in rows(page, ".steps")[0][0]
    shot(page, "trace")

    # a receipt file, checked by the server (POST /receipts/verify)
    receipt = scenario.registry.prediction(scenario.prediction_id)["receipt"]
    kid = receipt["key_id"]
    signer = next(m.name for m in scenario.registry.members() for k in m.keys if k.key_id == kid)
    good = tmp_path / "receipt.json"
    good.write_text(json.dumps(receipt))
    page.locator("#receipt-file").set_input_files(str(good))
    result = page.locator("#receipt-result [role=status]")
    result.wait_for()
    assert result.get_attribute("data-valid") == "true"
    assert "receipt.json: the receipt is valid" in result.inner_text()
    assert f"Signed by\t{signer} (key {receipt['key_id']})" in result.inner_text()
    shot(page, "receipt-valid")

    # the same receipt with the decision flipped, on the receipt page
    page.get_by_role("link", name="Verify a receipt").click()
    ready(page, "#/receipt", exact=True)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**receipt, "output": 1 - receipt["output"]}))
    page.locator("#receipt-file").set_input_files(str(forged))
    result = page.locator("#receipt-result [role=status]")
    result.wait_for()
    assert result.get_attribute("data-valid") == "false"
    text = result.inner_text()
    assert "forged.json: the receipt is NOT valid" in text and "a field was changed" in text
    shot(page, "receipt-forged")
    page.get_by_role("link", name="See the registry's trace of this prediction").click()
    ready(page, "#/trace?id=")
    assert page.locator("#receipt-validity").inner_text().startswith("The receipt is valid")

    # a file that is no receipt, and a receipt signed by a key the registry never enrolled
    headers = {"Authorization": f"Bearer {scenario.tokens[OFFICER]}"}
    verify = f"{scenario.url}{API_PREFIX}/receipts/verify"
    answer = httpx.post(verify, headers=headers, json={"model": "credit-risk", "hello": 1}).json()
    assert answer["valid"] is False and answer["problem"].startswith("malformed")
    answer = httpx.post(verify, headers=headers, json={**receipt, "key_id": "0" * 16}).json()
    assert answer["valid"] is False and answer["signed_by"] is None and "0" * 16 in answer["problem"]
    # a receipt of a model outside the officer's scope is refused, not checked
    refused = httpx.post(verify, headers=headers, json={**receipt, "model": "fraud-score"})
    assert refused.status_code == 403


def test_a_viewer_sees_no_action_and_the_api_refuses_them(page: Any, scenario: Scenario) -> None:
    sign_in(page, scenario, VIEWER)
    visit(page, scenario, "models/credit-risk/versions/2")
    assert page.locator("h1 .badge").inner_text() == "validated"
    assert page.locator("#actions").count() == 0
    assert page.get_by_role("button", name=re.compile("Approve|Reject|Deploy|Retire|alias")).count() == 0
    visit(page, scenario, "models/credit-risk")
    assert page.get_by_role("button", name=re.compile("Roll back")).count() == 0
    shot(page, "viewer")
    # trying anyway, from the page with the viewer's own token, as a script could
    answer = page.evaluate(
        """async () => {
            const response = await fetch("/api/v1/models/credit-risk/versions/2/approve", {
                method: "POST",
                headers: {
                    Authorization: `Bearer ${sessionStorage.getItem("modelledger.token")}`,
                    "Content-Type": "application/json",
                },
                body: JSON.stringify({reason: "sneaky"}),
            });
            return [response.status, await response.json()];
        }"""
    )
    assert answer[0] == 403 and answer[1]["error"] == "PermissionDenied"
    assert scenario.registry.state("models:/credit-risk/2").stage == "validated"


def test_a_lineage_graph_of_fifty_nodes_is_laid_out_without_overlap(page: Any, scenario: Scenario) -> None:
    reg = scenario.registry
    frame = pd.DataFrame({"branch": range(3), "limit": [1.0, 2.0, 3.0]})
    extracts = [
        reg.datasets.register(
            f"branch-{i:02d}",
            frame.assign(branch=i),
            source={"uri": f"s3://branches/{i:02d}.csv", "kind": "file"},
        )
        for i in range(25)
    ]
    merged = reg.datasets.register(
        "branches",
        frame,
        steps=[{"name": "union", "kind": "concat", "inputs": [d.uri for d in extracts]}],
    )
    mv = reg.register("credit-limits", lambda rows: rows, datasets={"train": merged}, capture=False)
    sign_in(page, scenario, SCIENTIST)
    visit(page, scenario, f"models/credit-limits/versions/{mv.version}/lineage")
    page.locator("#export-svg").wait_for()
    assert page.evaluate("window.modelledgerGraph.zoom()") >= 0.7  # starts readable, not shrunk to fit
    boxes = page.evaluate(
        """() => window.modelledgerGraph.nodes().map((n) => {
            const b = n.boundingBox({includeLabels: false});
            return [n.id(), b.x1, b.y1, b.x2, b.y2];
        })"""
    )
    assert len(boxes) >= 50
    union = [b for b in boxes if b[0].startswith("datasets:/branches/") and "#step" in b[0]]
    assert len(union) == 1  # the one step that read all 25 extracts is one node
    for i, (a, *ra) in enumerate(boxes):
        for b, *rb in boxes[i + 1 :]:
            apart = ra[2] <= rb[0] or rb[2] <= ra[0] or ra[3] <= rb[1] or rb[3] <= ra[1]
            assert apart, f"{a} overlaps {b}"
    shot(page, "lineage-large")
    page.get_by_role("button", name="Fit").click()
    shot(page, "lineage-large-fit")


# ---------------------------------------------------------------------------- the front door


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """``examples/demo.py --serve`` run for real: the whole story, then ``modelledger server``
    over its registry. Yields what the demo printed under its web UI step (label -> text) and its log."""
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLEDGER_")}
    env |= {"DEMO_DIR": str(tmp_path / "demo-output"), "PYTHONUNBUFFERED": "1"}
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(DEMO), "--serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the server it starts stops with it
        )
    try:
        deadline = time.monotonic() + 90
        while "Uvicorn running" not in log.read_text():
            assert process.poll() is None, f"the demo stopped:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the demo did not serve in time:\n{log.read_text()}"
            time.sleep(0.2)
        told = re.split(r"\n\d+\. The web UI", log.read_text(), maxsplit=1)[1]
        printed: dict[str, str] = {}
        for line in told.splitlines():
            label, _, text = line.strip().partition(" ")
            if label in ("open", "token", "model", "lineage", "declined"):
                printed.setdefault(label, text.strip().split()[0])
        assert printed["open"] == f"http://127.0.0.1:{port}/ui/"
        yield printed, log
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as its user stops it
        process.wait(timeout=30)


def test_the_demo_serves_its_story_in_the_ui(page: Any, demo: tuple[dict[str, str], Path]) -> None:
    printed, log = demo
    officer = "risk-officer@bank.example"
    page.goto(printed["open"])
    page.get_by_label("API token or OIDC token").fill(printed["token"])  # the first: the officer's
    page.get_by_role("button", name="Sign in").click()
    ready(page, "#/models")
    assert officer in page.locator("#signed-in-as").inner_text()
    assert [r[0] for r in rows(page, "#models")] == ["credit-risk"]

    page.goto(printed["model"])
    ready(page, "#/models/credit-risk", exact=True)
    version = rows(page, "#versions")[0]
    assert (version[0], version[1], version[2]) == ("v1", "deployed", "@production")
    assert rows(page, "#aliases")[0][:3] == ["@production", "v1", officer]
    shot(page, "demo-model")

    page.goto(printed["lineage"])
    ready(page, "#/models/credit-risk/versions/1/lineage")
    page.locator("#export-svg").wait_for()
    nodes, edges = _graph(page)
    model_steps = {n for n, kind in nodes if n.startswith("models:/credit-risk/1#") and kind == "step"}
    assert len(model_steps) == 3  # the pipeline's impute, scale and one-hot encode
    assert nodes - {(n, "step") for n in model_steps} == DATA_NODES | {
        ("models:/credit-risk/1", "model"),
        ("alias:credit-risk@production", "deployment"),
    }
    assert (SPLIT, "datasets:/applications-train/1", "produced") in edges
    assert (SPLIT, "datasets:/applications-holdout/1", "produced") in edges
    assert ("models:/credit-risk/1", "alias:credit-risk@production", "deployed") in edges
    shot(page, "demo-lineage")

    # the declined application the demo traced (its output 1: predicted default)
    declined = printed["declined"].split("id=")[1]
    assert f"{declined}  age" in log.read_text() and "DECLINE" in log.read_text().split(declined)[1][:120]
    page.goto(printed["declined"])
    ready(page, "#/trace?id=")
    assert page.locator("#receipt-validity").inner_text().startswith("The receipt is valid")
    prediction = page.get_by_role("region", name="Prediction").inner_text()
    assert declined in prediction and re.search(r"Output\s+1\b", prediction)
    assert page.locator("#approved-by").inner_text() == officer
    governance = page.get_by_role("region", name="Governance").inner_text()
    assert f"{officer} at " in governance and "bias report MRM-2026-114" in governance
    assert "@production by " in governance and "Q4 release" in governance
    assert {r[1] for r in rows(page, "#trace-datasets")} == {
        "datasets:/applications-train/1",
        "datasets:/applications-holdout/1",
    }
    shot(page, "demo-trace")


# ---------------------------------------------------------------------------- OIDC sign-in


class FakeProvider:
    """An OIDC provider at the outer edge, on loopback: discovery, an authorization endpoint
    that signs ``user`` in at once (no login form), a token endpoint that checks the PKCE
    verifier against the challenge, and its key set. ``exchanges`` records each code exchange."""

    def __init__(self, audience: str, user: str) -> None:
        import base64
        import hashlib
        import secrets
        from http.server import BaseHTTPRequestHandler
        from urllib.parse import parse_qs, urlencode, urlsplit

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "use": "sig"}
        codes: dict[str, dict[str, str]] = {}
        self.exchanges: list[dict[str, Any]] = []
        outer = self

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        class Handler(BaseHTTPRequestHandler):
            def answer(self, status: int, body: dict[str, Any] | None, location: str | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Access-Control-Allow-Origin", "*")  # the page calls from its origin
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self.answer(
                        200,
                        {
                            "issuer": outer.issuer,
                            "authorization_endpoint": f"{outer.issuer}/authorize",
                            "token_endpoint": f"{outer.issuer}/token",
                            "jwks_uri": f"{outer.issuer}/jwks.json",
                            "code_challenge_methods_supported": ["S256"],
                        },
                    )
                elif url.path == "/jwks.json":
                    self.answer(200, {"keys": [jwk]})
                elif url.path == "/authorize":
                    good = query.get("client_id") == audience and query.get("code_challenge_method") == "S256"
                    if not good or query.get("response_type") != "code" or "code_challenge" not in query:
                        self.answer(400, {"error": "invalid_request"})
                        return
                    code = secrets.token_urlsafe(16)
                    codes[code] = query
                    back = urlencode({"code": code, "state": query["state"]})
                    self.answer(302, None, f"{query['redirect_uri']}?{back}")
                else:
                    self.answer(404, {"error": "not_found"})

            def do_POST(self) -> None:
                form = {
                    k: v[0]
                    for k, v in parse_qs(
                        self.rfile.read(int(self.headers["Content-Length"])).decode()
                    ).items()
                }
                asked = codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                pkce = (
                    asked is not None
                    and b64(hashlib.sha256(verifier.encode()).digest()) == asked["code_challenge"]
                )
                outer.exchanges.append({"pkce": pkce, "form": form})
                if asked is None or not pkce or form.get("redirect_uri") != asked["redirect_uri"]:
                    self.answer(
                        400, {"error": "invalid_grant", "error_description": "code or verifier wrong"}
                    )
                    return
                now = int(time.time())
                claims = {"iss": outer.issuer, "aud": audience, "iat": now, "exp": now + 300, "email": user}
                token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
                self.answer(200, {"id_token": token, "access_token": "unused", "token_type": "Bearer"})

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = LoopbackHTTP(Handler)
        self.issuer = self._server.base

    def close(self) -> None:
        self._server.close()


def test_sign_in_through_the_oidc_provider_with_pkce(page: Any, tmp_path: Path) -> None:
    from modelledger.server import OidcSettings

    alice, server, _tokens, _pid, _rev = build_scenario(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")
    provider = FakeProvider("modelledger-ui", OFFICER)
    settings = OidcSettings(provider.issuer, "modelledger-ui", f"{provider.issuer}/jwks.json")
    try:
        with serve_app(create_app(server, oidc=settings)) as url:
            page.goto(f"{url}/ui/#/signin")
            ready(page, "#/signin")
            page.get_by_role("button", name=f"Sign in with {provider.issuer.removeprefix('http://')}").click()
            ready(page, "#/models")
            assert OFFICER in page.locator("#signed-in-as").inner_text()
            assert [r[0] for r in rows(page, "#models")] == ["credit-risk"]  # the officer's scope
            assert page.evaluate("location.search") == ""  # the code is not left in the address bar
            token = page.evaluate("sessionStorage.getItem('modelledger.token')")
            assert token.count(".") == 2 and not token.startswith("mlt_")  # the provider's ID token
            [exchange] = provider.exchanges
            assert exchange["pkce"] and exchange["form"]["redirect_uri"] == f"{url}/ui/"
            # the server checks that token as any JWT of the issuer: the officer may approve
            whoami = httpx.get(f"{url}{API_PREFIX}/whoami", headers={"Authorization": f"Bearer {token}"})
            assert whoami.json()["name"] == OFFICER
            shot(page, "oidc-signed-in")

            # a return this tab did not start (a forged or replayed link) is refused
            page.evaluate("sessionStorage.clear()")
            page.goto(f"{url}/ui/?code=stolen&state=guessed")
            ready(page, "#/signin")
            refusal = page.get_by_role("alert").inner_text()
            assert "Sign-in through the identity provider failed" in refusal and "state mismatch" in refusal
            shot(page, "oidc-refused")
            assert len(provider.exchanges) == 1  # the code was never sent to the provider
    finally:
        provider.close()
        server.close()
        alice.close()
