from __future__ import annotations

import numpy as np
import pandas as pd

from modelledger._domain import ColumnSpec
from modelledger._signature import infer_signature


def test_each_column_gets_its_kind_and_whether_it_holds_nulls() -> None:
    frame = pd.DataFrame(
        {
            "age": [30, 41, 52],
            "income": [1.5, np.nan, 2.0],
            "city": ["a", None, "c"],
            "member": [True, False, True],
            "seen": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
            "tier": pd.Categorical(["x", "y", "x"]),
        }
    )
    sig = infer_signature(frame, np.array([0.1, 0.2, 0.3]))
    assert sig.inputs == (
        ColumnSpec("age", "integer", False),
        ColumnSpec("income", "float", True),
        ColumnSpec("city", "string", True),
        ColumnSpec("member", "boolean", False),
        ColumnSpec("seen", "datetime", True),
        ColumnSpec("tier", "string", False),
    )
    assert sig.outputs == (ColumnSpec("prediction", "float", False),)


def test_an_empty_sample_and_a_frame_output_have_signatures_too() -> None:
    sig = infer_signature(pd.DataFrame({"a": pd.Series([], dtype="float64")}), pd.DataFrame({"p": [None]}))
    assert sig.inputs == (ColumnSpec("a", "float", False),)
    assert sig.outputs == (ColumnSpec("p", "string", True),)
