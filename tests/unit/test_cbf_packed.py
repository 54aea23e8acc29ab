"""x-CBF_PACKED (V1 and V2): round trips through our encoder and decoder, the real files' blobs
re-encoded byte for byte, and broken input refused, never decoded into garbage."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import REAL, needs_real

from xray_platform.io.cbf_packed import decode_packed, encode_packed
from xray_platform.io.formats import FormatError, read_frame
from xray_platform.io.imgcif import binary_sections


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("shape", [(1, 37, 53), (3, 20, 31), (1, 1, 500)])
def test_round_trips(v2, shape) -> None:
    rng = np.random.default_rng(sum(shape))
    for values in (rng.poisson(20, shape), rng.integers(-2**31, 2**31 - 1, shape),
                   np.cumsum(rng.integers(-50, 50, shape), axis=-1), np.zeros(shape)):
        a = values.astype(np.int32)
        s, h, w = shape
        blob = encode_packed(a.ravel(), n_fast=w, n_slow=h, n_third=s, v2=v2)
        out = decode_packed(blob, a.size, n_fast=w, n_slow=h, n_third=s, v2=v2)
        assert np.array_equal(out, a.ravel())


def test_truncated_or_wrong_blobs_raise() -> None:
    a = np.random.default_rng(0).poisson(100, (40, 40)).astype(np.int32)
    blob = encode_packed(a.ravel(), n_fast=40, n_slow=40)
    for cut in range(0, len(blob), 37):
        with pytest.raises(ValueError):
            decode_packed(blob[:cut], a.size, n_fast=40, n_slow=40)
    with pytest.raises(ValueError, match="element count"):
        decode_packed(blob, a.size + 1, n_fast=40, n_slow=40)


@needs_real
@pytest.mark.parametrize("name", ["cspad_thermolysin_0401.cbf", "rayonix340_kapton_hit.cbf"])
def test_real_blobs_re_encode_byte_for_byte(name) -> None:
    path = REAL / name
    section = binary_sections(path, path.read_bytes())[0]
    dims = (1,) * (3 - len(section.dims)) + section.dims
    n = int(np.prod(dims))
    values = decode_packed(section.blob, n, n_fast=dims[2], n_slow=dims[1], n_third=dims[0])
    assert encode_packed(values, n_fast=dims[2], n_slow=dims[1], n_third=dims[0]) == \
        section.blob


@needs_real
def test_a_truncated_cspad_file_is_an_error_naming_it(tmp_path) -> None:
    raw = (REAL / "cspad_thermolysin_0401.cbf").read_bytes()
    for cut in (60_000, 700_000, len(raw) - 5_000):
        p = tmp_path / f"cut{cut}.cbf"
        p.write_bytes(raw[:cut])
        with pytest.raises(FormatError, match=f"cut{cut}.cbf"):
            read_frame(p)
