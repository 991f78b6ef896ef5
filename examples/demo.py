"""The modelledger story, end to end, on the embedded default registry.

A credit team extracts loan applications from its warehouse, prepares them,
trains a default-risk model, registers it with its manifest and data, gets it
approved by someone else, deploys it, and serves decisions that can each be
traced back to the model, the code, the data and the approver. Each person (and the
scoring service) acts with a key of their own, enrolled in the registry's ledger. Run with
``make demo-story``; everything lands in ./demo-output/ (the keys in demo-output/identities:
on a real team each lives on its owner's machine).

With ``--serve`` (``make demo``) the story is followed by ``modelledger server`` over the
demo's registry, on 127.0.0.1 (``--port``, default 8000), with the web UI at ``/ui/``: the
demo enrols the server's own key with the gateway role, prints tokens to sign in with and the
pages that show the story, and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

OUT = Path(os.environ.get("DEMO_DIR", "demo-output")).absolute()
REPO = Path(__file__).resolve().parent.parent
DATA_SCIENTIST = "data-scientist@bank.example"
RISK_OFFICER = "risk-officer@bank.example"
SCORER = "scoring-service"
SERVER = "modelledger-server"


def make_credit_applications(n: int = 6_000, seed: int = 42) -> pd.DataFrame:
    """A synthetic but realistic book of credit applications with a default flag."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    income = rng.lognormal(10.8, 0.45, n).round(2)
    loan = (rng.gamma(2.0, 6_000, n) + 500).round(2)
    term = rng.choice([12, 24, 36, 60], n, p=[0.2, 0.3, 0.35, 0.15])
    employment = rng.choice(
        ["salaried", "self-employed", "contract", "unemployed"], n, p=[0.6, 0.2, 0.15, 0.05]
    )
    housing = rng.choice(["own", "mortgage", "rent"], n, p=[0.25, 0.4, 0.35])
    late_payments = rng.poisson(0.4, n)
    logit = (
        -3.4
        + 7.0 * (loan / income)
        + 0.9 * late_payments
        + 1.8 * (employment == "unemployed")
        + 0.5 * (housing == "rent")
        - 0.03 * (age - 40)
        + 0.01 * term
    )
    default = rng.random(n) < 1 / (1 + np.exp(-logit))
    declared_income = income.copy()
    declared_income[rng.random(n) < 0.03] = np.nan  # some applicants did not declare income
    frame = pd.DataFrame(
        {
            "application_id": np.arange(100_000, 100_000 + n),
            "age": age,
            "annual_income": declared_income,
            "loan_amount": loan,
            "term_months": term,
            "employment": employment,
            "housing": housing,
            "late_payments_12m": late_payments,
            "defaulted": default.astype(int),
        }
    )
    duplicates = frame.sample(40, random_state=seed)  # the extract has a few duplicate rows
    return pd.concat([frame, duplicates], ignore_index=True)


def print_tree(graph: Any, node_id: str, indent: str = "   ", seen: set[str] | None = None) -> None:
    """Upstream lineage as an indented tree (`modelledger lineage` prints the same for people)."""
    seen = set() if seen is None else seen

    def walk(nid: str, indent: str, label: str) -> None:
        node = graph.nodes[nid]
        again = nid in seen and graph.upstream(nid)
        print(f"{label}{node.label}{'  (shown above)' if again else ''}")
        if again:
            return
        seen.add(nid)
        parents = graph.upstream(nid)
        for i, (edge, parent) in enumerate(parents):
            last = i == len(parents) - 1
            tag = f"[{edge.label}] " if edge.label else ""
            walk(
                parent.id, indent + ("    " if last else "│   "), f"{indent}{'└── ' if last else '├── '}{tag}"
            )

    walk(node_id, indent, indent)


def main() -> str:
    """The story; returns the id of the declined application's prediction."""
    from modelledger import Registry, create_identity

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    os.environ["MODELLEDGER_HOME"] = str(OUT / ".modelledger")
    os.environ["MODELLEDGER_IDENTITIES"] = str(OUT / "identities")
    registry = Registry.open(actor=DATA_SCIENTIST)  # the embedded default: SQLite + a folder

    print("0. Team: the first user becomes the root admin and enrols the others by their public keys")
    registry.init()  # creates the registry and her own key (a first write would too)
    officer_key = create_identity(RISK_OFFICER)[2]  # made on the risk officer's machine
    scorer_key = create_identity(SCORER)[2]  # made on the scoring host
    registry.enrol(RISK_OFFICER, officer_key, roles=["approver", "deployer"], models="credit-*")
    registry.enrol(SCORER, scorer_key, roles="serving", models="credit-*")
    for member in registry.members():
        print(f"   {member.name:<28} {', '.join(member.roles):<20} key {member.keys[0].key_id}")
    officer = Registry.open(actor=RISK_OFFICER)
    scorer = Registry.open(actor=SCORER)

    print("1. Extract: applications from the warehouse, versioned as an immutable Parquet copy")
    extract = OUT / "applications_extract.csv"
    make_credit_applications().to_csv(extract, index=False)
    raw = registry.datasets.register(
        "applications-raw",
        extract,
        source={
            "uri": "postgresql://dwh.bank.example/lending",
            "kind": "query",
            "query": "SELECT * FROM loan_applications WHERE submitted >= '2026-01-01'",
        },
    )
    print(f"   {raw.uri}: {raw.row_count:,} rows, digest {raw.digest[:19]}..., stored as {raw.path}")
    again = registry.datasets.register("applications-raw", extract)
    print(f"   registering the same extract again returns {again.uri} (nothing new stored)")

    print("2. Prepare: drop duplicate applications, split train / holdout")
    frame = registry.datasets.to_pandas(raw)
    clean_frame = frame.drop_duplicates(subset="application_id").reset_index(drop=True)
    clean = registry.datasets.register(
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
    train_frame, holdout_frame = train_test_split(
        clean_frame, test_size=0.25, random_state=7, stratify=clean_frame["defaulted"]
    )
    split = {"name": "split", "kind": "train_test_split", "params": {"test_size": 0.25, "random_state": 7}}
    train = registry.datasets.register(
        "applications-train", train_frame, steps=[{**split, "inputs": [clean.uri]}]
    )
    holdout = registry.datasets.register(
        "applications-holdout", holdout_frame, steps=[{**split, "inputs": [clean.uri]}]
    )
    print(
        f"   {clean.uri} {clean.row_count:,} rows -> {train.uri} {train.row_count:,} / {holdout.uri} {holdout.row_count:,}"
    )

    print("3. Train: examples/train.py reads its data through the registry, by role")
    print(
        f"   MODELLEDGER_DATA_TRAIN={train.uri} MODELLEDGER_DATA_HOLDOUT={holdout.uri} python examples/train.py"
    )
    registry.create_model(
        "credit-risk", description="Probability of default on new loans", tags={"team": "credit"}
    )
    training = {
        **os.environ,
        "MODELLEDGER_DATA_TRAIN": train.uri,
        "MODELLEDGER_DATA_HOLDOUT": holdout.uri,
        "MODELLEDGER_USER": DATA_SCIENTIST,
    }
    # run from the repository's root, the folder the run is recorded in (and run again from)
    subprocess.run([sys.executable, "examples/train.py"], cwd=REPO, env=training, check=True)
    features = list(train_frame.columns.drop(["application_id", "defaulted"]))
    X_holdout = holdout_frame[features]
    version = registry.get_version("models:/credit-risk/latest")
    auc = float(version.manifest["metrics"]["auc_holdout"])

    print(
        "4. Register: artefact + manifest + data + how it ran, walking candidate -> data_prepared -> trained -> validated"
    )
    m = version.manifest
    src = m["source"]
    print(f"   {version.uri}  digest {version.digest[:23]}...  folder {version.folder}")
    print(f"   algorithm  {m['algorithm']}")
    print(
        f"   framework  {m['framework']} {m['framework_version']}, Python {m['python']}, {len(m['dependencies'])} packages pinned"
    )
    print(
        f"   code       {src['repo_url']} {src['path']} @ {(src['revision'] or 'no git')[:12]} dirty={src['dirty']}"
    )
    print(f"   steps      {', '.join(s['name'] + ':' + s['kind'] for s in m['steps'])}")
    run = m.get("run") or {}
    print(
        f"   run        {' '.join(run.get('command') or ['(not recorded)'])} "
        f"(in {'the repository root' if run.get('cwd') == '.' else run.get('cwd')}), "
        f"seeds {run.get('seeds', {})}, data {', '.join(d['role'] + '=' + d['uri'] for d in m['datasets'])}"
    )
    print(f"   stage      {registry.state(version.uri).stage} (gate auc >= 0.75 on holdout: {auc})")

    print("5. Approve (four-eyes: not by the person who registered it) and deploy to @production")
    try:
        registry.approve(version.uri, reason="self-review")
    except Exception as exc:  # the demo shows the refusal on purpose
        print(f"   refused: {exc}")
    try:
        registry.set_alias("credit-risk", "production", version.version)
    except Exception as exc:  # the demo shows the refusal on purpose
        print(f"   refused: {exc}")
    officer.approve(version.uri, reason="Reviewed holdout AUC and bias report MRM-2026-114")
    officer.deploy(version.uri, reason="Q4 release")
    print(
        f"   approved and deployed by {RISK_OFFICER}: {registry.get_version('models:/credit-risk@production').uri}"
    )

    print("6. Serve: load by alias (every byte verified), decide, sign a receipt per decision")
    print(f"   (signed by {SCORER}'s own serving key)")
    applicants = X_holdout.head(6)
    with scorer.load("models:/credit-risk@production", capture=True) as served:
        decisions, receipts = served.predict(applicants)
    for (_, row), decision, receipt in zip(applicants.iterrows(), decisions, receipts, strict=True):
        verdict = "DECLINE (predicted default)" if decision else "approve"
        print(
            f"   {receipt.prediction_id}  age {row.age:>2}, income {row.annual_income:>9,.0f}, loan {row.loan_amount:>8,.0f}: {verdict}"
        )
    model = registry.load("models:/credit-risk@production")

    print("7. Lineage: everything upstream of the deployed version")
    print_tree(registry.lineage(version.uri), version.uri)

    print("8. Re-evaluate later on the stored holdout set")
    stored = registry.datasets.to_pandas(holdout)
    again_auc = roc_auc_score(stored["defaulted"], model.raw.predict_proba(stored[features])[:, 1])
    print(f"   AUC on {holdout.uri} read back from the registry: {again_auc:.3f}")

    print("9. Why was this application declined? Trace the decision back")
    declined = next((r for d, r in zip(decisions, receipts, strict=True) if d), receipts[0])
    report = registry.trace(declined.prediction_id)
    g, man = report.governance, report.manifest
    print(
        f"   prediction  {report.prediction['id']} at {report.prediction['time']}: output {report.prediction['output']}"
    )
    print(
        f"   receipt     {'valid' if report.receipt_valid else report.receipt_problem} (Ed25519, {SCORER}'s key)"
    )
    print(
        f"   model       {report.model['uri']} {report.model['digest'][:23]}... held {', '.join('@' + a for a in g['aliases_at_prediction'])}"
    )
    for a in g["approvals"]:
        print(f"   approved    by {a['actor']} at {a['time'][:19]}: {a['reason']}")
    print(
        f"   code        {man['source']['repo_url']} {man['source']['path']} @ {(man['source']['revision'] or '-')[:12]}"
    )
    print(
        f"   built with  {man['algorithm']} {man['params']['n_estimators']} trees, {man['framework']} {man['framework_version']}"
    )

    def walk(entries: list[dict[str, Any]], indent: str) -> None:
        for entry in entries:
            src = entry["source"]
            origin = f" from {src['kind']} {src.get('uri') or ''}" if src["kind"] != "dataframe" else ""
            role = f"[{entry['role']}] " if entry.get("role") else ""
            print(f"{indent}{role}{entry['uri']} ({entry['rows']:,} rows){origin}")
            for step in entry["steps"]:
                print(f"{indent}   <- {step['name']} ({step['kind']})")
                walk(step["inputs"], indent + "      ")

    print("   data")
    walk(report.datasets, "     ")

    print("10. Anyone can check a receipt offline with the trust bundle and the pinned root key")
    root_key = OUT / "registry-root-key.pem"
    root_key.write_bytes(registry.public_key())
    bundle_file = OUT / "trust-bundle.json"
    bundle_file.write_text(json.dumps(registry.trust_bundle(), indent=2))
    receipt_file = OUT / "receipt.json"
    receipt_file.write_text(declined.to_json())
    from modelledger import InvalidReceipt, check_receipt_with_bundle

    def offline(receipt: dict[str, Any]) -> str:
        bundle = json.loads(bundle_file.read_text())
        try:
            check_receipt_with_bundle(receipt, bundle, root_public_key=root_key.read_bytes())
        except InvalidReceipt as exc:
            return f"INVALID ({exc.reason})"
        return f"valid: signed by {SCORER}, enrolled to serve credit-*, not revoked"

    print(f"   {receipt_file.name}: {offline(declined.to_dict())}")
    forged = {**declined.to_dict(), "output": 0}
    print(f"   the same receipt with the decision flipped: {offline(forged)}")
    print(
        f"   (also: modelledger receipt verify {receipt_file} --bundle {bundle_file} --public-key {root_key})"
    )

    reproduce(registry, version.uri)

    print("12. Audit: the ledger, its signatures and every stored byte")
    for event in registry.history(version.uri):
        print(
            f"   #{event.seq:<3} {event.time[:19]} {event.actor:<28} {event.action:<22} {event.reason or ''}"
        )
    report_v = registry.verify()
    print(
        f"   verify: {report_v.versions_checked} version(s), {report_v.files_checked} file(s), "
        f"{report_v.events_checked} ledger events, {report_v.checkpoints_checked} signed checkpoints: "
        f"{'OK' if report_v.ok else report_v.problems}"
    )
    home = OUT / ".modelledger"
    print(f"\nRegistry kept in {home}. Try:")
    print(f"  MODELLEDGER_HOME={home} modelledger lineage models:/credit-risk@production")
    print(f"  MODELLEDGER_HOME={home} modelledger trace {declined.prediction_id}")
    return declined.prediction_id


def reproduce(registry: Any, uri: str) -> None:
    """Rebuild ``uri`` from its record alone, and say whether the same model came out."""
    from modelledger import RunFailed, StepEvent

    print(f"11. Reproduce: rebuild {uri} from its record (clean checkout, pinned environment, same data)")
    print("   (the first time, the environment is built: a minute or so; then it is cached)", flush=True)

    def show(event: StepEvent) -> None:
        if event.status in ("done", "failed") and event.step != "verdict":  # printed below
            failed = "FAILED: " if event.status == "failed" else ""
            print(f"   {event.step:<12} {failed}{event.detail}", flush=True)

    # A checkout with uncommitted changes records them; the demo then rebuilds the revision
    # without them, and says so.
    dirty = bool(registry.get_version(uri).manifest["source"].get("dirty"))
    try:
        found = registry.reproduce(uri, allow_dirty=dirty, progress=show)
    except RunFailed as exc:
        print(f"   could not reproduce, at step {exc.step}: {exc.detail.splitlines()[0]}")
        return
    print(
        f"   {'verdict':<12} {found.verdict.upper()}: {found.reproduction} (reproduction_of {uri}), event #{found.seq}"
    )
    if found.verdict == "identical":
        print("                every artefact byte matches the deployed version's")
    for reason in found.reasons:
        print(f"                why: {reason}")
    for note in found.not_reproduced:
        print(f"                not reproduced: {note}")
    print(f"   (also: modelledger reproduce {uri})")


def serve(port: int, declined: str) -> int:
    """Serve the demo's registry with ``modelledger server`` until Ctrl-C; returns its exit code."""
    from modelledger import Registry, create_identity

    print("\n13. The web UI: `modelledger server` over this registry, for people who do not write Python")
    registry = Registry.open(actor=DATA_SCIENTIST)
    # the server writes (approve, deploy...) on its callers' behalf with a key of its own
    registry.enrol(SERVER, create_identity(SERVER)[2], roles="gateway", models="*")
    tokens = {
        member: registry.create_token(member, expires="1d", reason="demo web UI")[0]
        for member in (RISK_OFFICER, DATA_SCIENTIST)
    }
    registry.close()
    base = f"http://127.0.0.1:{port}/ui/"
    print(f"   open       {base}")
    print(f"   token      {tokens[RISK_OFFICER]}   ({RISK_OFFICER}: approver, deployer of credit-*)")
    print(f"   token      {tokens[DATA_SCIENTIST]}   ({DATA_SCIENTIST}: admin)")
    print("   (paste a token on the sign-in page; each is valid for a day)")
    print(f"   model      {base}#/models/credit-risk")
    print(f"   lineage    {base}#/models/credit-risk/versions/1/lineage")
    print(f"   declined   {base}#/trace?id={declined}")
    print("   Ctrl-C stops the server.", flush=True)
    script = Path(sys.executable).with_name("modelledger")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from modelledger.cli import main; main()"]
    )
    env = {**os.environ, "MODELLEDGER_IDENTITY": SERVER}
    try:
        return subprocess.run([*command, "server", "--port", str(port)], env=env, check=False).returncode
    except KeyboardInterrupt:  # the server got the same Ctrl-C and has stopped
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The modelledger story, end to end.")
    parser.add_argument("--serve", action="store_true", help="after the story, serve the web UI over it")
    parser.add_argument("--port", type=int, default=8000, help="port for --serve (default: 8000)")
    args = parser.parse_args()
    declined_id = main()
    if args.serve:
        sys.exit(serve(args.port, declined_id))
