"""The modelledger story on the embedded default registry.

A credit team trains a default-risk model, registers it with its manifest,
promotes it to production and serves predictions by alias. Run with
``make demo``; everything lands in ./demo-output/.modelledger.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

OUT = Path(os.environ.get("DEMO_DIR", "demo-output")).absolute()


def make_credit_applications(n: int = 5_000, seed: int = 42) -> pd.DataFrame:
    """A synthetic but realistic book of credit applications with a default flag."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    income = rng.lognormal(10.8, 0.45, n).round(2)
    loan = (rng.gamma(2.0, 6_000, n) + 500).round(2)
    term = rng.choice([12, 24, 36, 60], n, p=[0.2, 0.3, 0.35, 0.15])
    employment = rng.choice(["salaried", "self-employed", "contract", "unemployed"], n, p=[0.6, 0.2, 0.15, 0.05])
    housing = rng.choice(["own", "mortgage", "rent"], n, p=[0.25, 0.4, 0.35])
    late_payments = rng.poisson(0.4, n)
    income_with_gaps = income.copy()
    income_with_gaps[rng.random(n) < 0.03] = np.nan  # a few applicants did not declare income
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
    return pd.DataFrame(
        {
            "age": age,
            "annual_income": income_with_gaps,
            "loan_amount": loan,
            "term_months": term,
            "employment": employment,
            "housing": housing,
            "late_payments_12m": late_payments,
            "defaulted": default.astype(int),
        }
    )


def main() -> None:
    from modelledger import Registry

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    os.environ["MODELLEDGER_HOME"] = str(OUT / ".modelledger")
    os.environ.setdefault("MODELLEDGER_USER", "data-scientist@bank.example")

    print("1. Data: a book of credit applications")
    data = make_credit_applications()
    X, y = data.drop(columns=["defaulted"]), data["defaulted"]
    X_train, X_holdout, y_train, y_holdout = train_test_split(X, y, test_size=0.25, random_state=7, stratify=y)
    print(f"   {len(data):,} applications, default rate {y.mean():.1%}; train {len(X_train):,} / holdout {len(X_holdout):,}")

    print("2. Train: impute, scale, one-hot encode, gradient boosting")
    params = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.08, "random_state": 7}
    numeric = ["age", "annual_income", "loan_amount", "term_months", "late_payments_12m"]
    categorical = ["employment", "housing"]
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
                    ]
                ),
            ),
            ("model", GradientBoostingClassifier(**params)),
        ]
    )
    started = time.time()
    pipeline.fit(X_train, y_train)
    auc = roc_auc_score(y_holdout, pipeline.predict_proba(X_holdout)[:, 1])
    print(f"   holdout AUC {auc:.3f}")

    print("3. Register: artefact + manifest (params, git source, dependencies, metrics, signature)")
    registry = Registry.open()  # the embedded default: SQLite + a folder, no setup
    registry.create_model("credit-risk", description="Probability of default on new loans", tags={"team": "credit"})
    version = registry.register(
        "credit-risk",
        pipeline,
        sample_input=X_train.head(20),
        params=params,
        metrics={"auc_holdout": round(float(auc), 4)},
        manifest={
            "training_job": {
                "id": "demo-run-1",
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        },
    )
    m = version.manifest
    print(f"   {version.uri}  digest {version.digest[:23]}...  folder {version.folder}")
    print(f"   algorithm  {m['algorithm']}")
    print(f"   framework  {m['framework']} {m['framework_version']}, Python {m['python']}, {len(m['dependencies'])} packages pinned")
    src = m["source"]
    print(f"   source     {src['repo_url']} {src['path']} @ {(src['revision'] or 'no git')[:12]} dirty={src['dirty']}")
    print(f"   signature  {', '.join(c['name'] + ':' + c['type'] for c in m['signature']['inputs'])}")

    print("4. Promote: point @production at the version")
    registry.set_alias("credit-risk", "production", version.version)

    print("5. Serve: load by alias (every byte verified before unpickling) and predict")
    model = registry.load("models:/credit-risk@production")
    applicants = X_holdout.head(8)
    decisions = model.predict(applicants)
    for (_, row), decision in zip(applicants.iterrows(), decisions):
        verdict = "DECLINE (predicted default)" if decision else "approve"
        print(f"   age {row.age:>2}, income {row.annual_income:>9,.0f}, loan {row.loan_amount:>8,.0f}: {verdict}")
    assert (decisions == pipeline.predict(applicants)).all()

    print("6. Audit: verify every stored artefact against its digest")
    report = registry.verify()
    print(f"   {report.versions_checked} version(s), {report.files_checked} file(s): {'OK' if report.ok else report.problems}")
    print(f"\nRegistry kept in {OUT / '.modelledger'}; try: MODELLEDGER_HOME={OUT / '.modelledger'} modelledger versions show models:/credit-risk@production")


if __name__ == "__main__":
    main()
