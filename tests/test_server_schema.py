"""Property-based tests of the REST API from its own OpenAPI document: schemathesis reads
``/api/v1/openapi.json`` from the server running for real over a registry with data, generates
requests for every operation the document lists (valid and invalid ones, and valid ones about
data that exists) and sends them with an admin token. Every answer must be no 5xx, carry a
status the document declares for the operation, and have the content type and body it
documents.

Every operation in the document is tested, so routes added later are covered with no change
here; :data:`SKIPPED` names the few that cannot be called blindly, each with its reason.

The operations are driven through ``APIOperation.as_strategy`` and Hypothesis directly, one
subtest each: schemathesis's lazy pytest loader (``schemathesis.pytest.from_fixture``), which
a schema served by a fixture would need, does not run under the pytest this project pins.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.test_server import Served, served

from modelledger.server import API_PREFIX

__all__ = ["served"]  # the fixture, imported so that pytest finds it here

SKIPPED: dict[tuple[str, str], str] = {
    ("GET", f"{API_PREFIX}/verify"): "re-hashes every artefact of the registry, seconds a call; "
    "test_server checks its answer",
    ("POST", f"{API_PREFIX}/datasets/{{name}}/versions"): "a tar stream, as a version's upload; "
    "test_remote registers data sets over HTTP",
    ("GET", f"{API_PREFIX}/events"): "a stream that never ends; test_events reads it",
    ("POST", f"{API_PREFIX}/models/{{name}}/versions"): "its body is a tar stream, which schemathesis "
    "cannot generate; test_remote sends good, truncated, mis-digested and escaping uploads",
}
"""(method, path template) -> why schemathesis does not call it."""

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

EXAMPLES = settings(
    max_examples=6,
    derandomize=True,  # the same requests every run: a failure here is reproducible
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _known(served: Served) -> dict[str, str]:
    """Path parameters naming data the registry holds, so that success bodies are checked too."""
    return {"name": "credit-risk", "ref": "production", "prediction_id": served.prediction_id}


def test_every_operation_answers_as_its_document_says(served: Served, subtests: pytest.Subtests) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}{API_PREFIX}/openapi.json")
    schema.config.update(base_url=served.url)
    operations = []
    for result in schema.get_all_operations():
        operations.append(result.ok())  # an operation schemathesis cannot read fails here
    listed = {(op.method.upper(), op.path) for op in operations}
    assert not set(SKIPPED) - listed, "a skipped operation is not in the document any more"
    assert len(listed) >= 19 and ("GET", f"{API_PREFIX}/models") in listed
    headers = {"Authorization": f"Bearer {served.admin_token}"}
    known = _known(served)
    called = 0
    for op in operations:
        if (op.method.upper(), op.path) in SKIPPED:
            continue
        names = {p.name for p in op.path_parameters}
        fixed = {name: known[name] for name in names if name in known}
        strategies: dict[str, Any] = {"positive": op.as_strategy(GenerationMode.POSITIVE)}
        if any(True for _ in op.iter_parameters()) or op.body:  # else there is nothing to get wrong
            strategies["negative"] = op.as_strategy(GenerationMode.NEGATIVE)
        if fixed:
            strategies["existing data"] = op.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed)
        for kind, strategy in strategies.items():
            with subtests.test(operation=op.label, data=kind):

                @EXAMPLES
                @given(case=strategy)
                def answers_as_documented(case: Any) -> None:
                    case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

                answers_as_documented()
                called += 1
    assert called >= len(listed) - len(SKIPPED)


def test_inputs_it_found_are_refused_with_the_error_body(served: Served) -> None:
    """Answers that once were 500s: each is now a 400 with the usual error body."""
    cases = {
        # str.isdigit() holds for "¹" but int() refuses it
        "/models/credit-risk/versions/%C2%B9": "InvalidInput",
        "/models/credit-risk/versions/%C2%B9/state": "InvalidInput",
        # PostgreSQL text cannot hold NUL: a filter with one failed in the database
        "/audit?actor=a%00b": "InvalidInput",
        "/audit?action=version.%00": "InvalidInput",
        "/models?prefix=%00": "InvalidInput",
        "/versions?q=model%20%3D%20%27%00%27": "InvalidInput",
    }
    for path, error in cases.items():
        response = served.get(API_PREFIX + path, served.admin_token)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] == error, path
    assert served.api("/models/credit-risk/versions/1")["version"] == 1  # ASCII digits still are numbers
