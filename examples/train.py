"""The demo's training: a credit-risk model trained on the data sets the registry names.

It opens no file of its own: ``modelledger.inputs()`` reads the train and holdout sets that the
``MODELLEDGER_DATA_TRAIN`` / ``MODELLEDGER_DATA_HOLDOUT`` variables name (data set versions,
checked by digest), and ``register`` records how this run can be run again (the command, the
variables, the seeds) beside the code revision, the packages and the data. So the same script
trains again, unchanged, on other data; and ``modelledger reproduce`` can rebuild the version
it registered. Run by ``examples/demo.py``; by hand::

    MODELLEDGER_DATA_TRAIN=datasets:/applications-train/1 \\
    MODELLEDGER_DATA_HOLDOUT=datasets:/applications-holdout/1 python examples/train.py
"""

from __future__ import annotations

import time

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import modelledger
from modelledger import Registry

FEATURES = [
    "age",
    "annual_income",
    "loan_amount",
    "term_months",
    "employment",
    "housing",
    "late_payments_12m",
]
NUMERIC = ["age", "annual_income", "loan_amount", "term_months", "late_payments_12m"]
PARAMS = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.08, "random_state": 7}


def main() -> None:
    frames = modelledger.inputs()  # {"train": DataFrame, "holdout": DataFrame}
    train, holdout = frames["train"], frames["holdout"]
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        (
                            "num",
                            Pipeline(
                                [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                            ),
                            NUMERIC,
                        ),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["employment", "housing"]),
                    ]
                ),
            ),
            ("model", GradientBoostingClassifier(**PARAMS)),
        ]
    )
    started = time.gmtime()
    pipeline.fit(train[FEATURES], train["defaulted"])
    auc = float(roc_auc_score(holdout["defaulted"], pipeline.predict_proba(holdout[FEATURES])[:, 1]))
    print(f"   holdout AUC {auc:.3f}")
    # the data sets' roles, the command and its seeds are recorded without being named here
    version = Registry.open().register(
        "credit-risk",
        pipeline,
        sample_input=train[FEATURES].head(20),
        metrics={"auc_holdout": round(auc, 4)},
        manifest={
            "gates": ["auc >= 0.75 on holdout"],
            "training_job": {
                "id": f"train-{time.strftime('%Y%m%dT%H%M%SZ', started)}",
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
                "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        },
    )
    print(f"   registered {version.uri}")


if __name__ == "__main__":
    main()
