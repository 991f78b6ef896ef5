from __future__ import annotations

from modelledger import Registry


def test_register_and_load_by_alias(registry: Registry, fitted_pipeline, credit_data) -> None:
    X, _ = credit_data
    v = registry.register("credit-risk", fitted_pipeline, sample_input=X.head())
    registry.set_alias("credit-risk", "champion", v.version)
    loaded = registry.load("models:/credit-risk@champion")
    assert (loaded.predict(X) == fitted_pipeline.predict(X)).all()
