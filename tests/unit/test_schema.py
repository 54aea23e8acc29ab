"""The one answer schema (core/schema.py) documents exactly what the answers and the table hold."""

from __future__ import annotations

from helpers import REAL, needs_real, xrp_here

from xray_platform.core.schema import ANSWER, COLUMNS, TABLE
from xray_platform.reports.table import table_row


@needs_real
def test_every_answer_field_and_table_column_is_documented_and_nothing_else() -> None:
    from xray_platform.core.answer import load_file, predict_frames
    from xray_platform.io.formats import read_frame
    from xray_platform.zoo import zoo_model

    models = {"resolution": load_file("resolution", zoo_model("resolution").file)}
    rows = predict_frames([read_frame(REAL / "thau_3_2_0002.cbf.bz2")], models,
                          with_spots=True)
    assert set(rows[0]) == set(ANSWER)
    assert set(COLUMNS) == set(TABLE) and set(table_row(rows[0])) == set(TABLE)
    assert all(doc.strip() for _, doc in ANSWER.values()) and all(TABLE.values())


def test_the_openapi_answer_model_and_predict_columns_come_from_it() -> None:
    from xray_platform.serve.app import FrameAnswer

    props = FrameAnswer.model_json_schema()["properties"]
    assert set(props) == set(ANSWER)
    assert props["resolution_A"]["description"] == ANSWER["resolution_A"][1]
    out = xrp_here("predict", "--columns").stdout
    assert all(f"{name}:" in out for name in TABLE)
