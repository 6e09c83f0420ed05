"""AdaComp codec: selection math, error feedback, index coding, state, import hygiene.

Checks the invariants of docs/CODEC.md against the public codec API and
against a plain per-bin reference written here from its rules (per tensor, per rank, per step).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from adacomp_mpi import (
    CodecConfig,
    CodecState,
    TensorSpec,
    decode,
    decode_mean,
    encode,
    make_state,
)
from adacomp_mpi.codec import blocks, indexcoding
from adacomp_mpi.codec.api import encode_counted, mean_into
from adacomp_mpi.codec.counters import KindCounters
from adacomp_mpi.codec.indexcoding import (
    ENCODERS,
    FIXED,
    METHOD_NAMES,
    RICE,
    CodedIndices,
    decode_indices,
    encode_indices,
)
from adacomp_mpi.codec.wire import DENSE, parse_payload

EPS = float(np.finfo(np.float32).eps)
SCALE_RULES = ("mean_abs", "mean_bin_max")
# ADACOMP_HYPOTHESIS_SCALE=20 runs twenty times the examples (a longer local search).
SCALE = int(os.environ.get("ADACOMP_HYPOTHESIS_SCALE", "1"))
PROPERTY = settings(
    max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --------------------------------------------------------------------------- helpers


def heavy_tailed(rng: np.random.Generator, numel: int) -> np.ndarray:
    """Gradient-like values: Student-t, a few large outliers, float32."""
    return (rng.standard_t(3, numel) * 1e-3).astype(np.float32)


def sent_positions(payload: np.ndarray, specs: list[TensorSpec], index: int) -> tuple:
    """(indices, negative, scale, method) of one record of a payload."""
    record = parse_payload(payload, specs)[index]
    if record.coded is None:
        return None, None, np.float32(record.scale), DENSE
    indices, negative = decode_indices(record.coded, count=record.sent, numel=record.numel)
    return indices, negative, np.float32(record.scale), record.coded.method


def reference_step(
    residue: np.ndarray, grad: np.ndarray, bin_size: int, rule: str
) -> tuple[np.ndarray, np.ndarray, np.float32 | None, np.ndarray]:
    """docs/CODEC.md's rule, one bin at a time: (sent, negative, scale, G)."""
    accumulated = residue + grad  # G (float32)
    lookahead = accumulated + grad  # H (float32)
    sent: list[int] = []
    sent_bin_max: list[float] = []
    for start in range(0, accumulated.size, bin_size):
        g = accumulated[start : start + bin_size]
        h = lookahead[start : start + bin_size]
        gmax = float(np.max(np.abs(g)))
        if gmax == 0:
            continue  # an all-zero bin sends nothing
        for j in range(g.size):
            if abs(float(h[j])) >= gmax and g[j] != 0:
                sent.append(start + j)
                sent_bin_max.append(gmax)
    indices = np.array(sent, np.int64)
    if not sent:
        return indices, np.zeros(0, np.bool_), None, accumulated
    magnitudes = [abs(float(accumulated[i])) for i in sent]
    chosen = magnitudes if rule == "mean_abs" else sent_bin_max
    scale = np.float32(math.fsum(chosen) / len(chosen))
    return indices, accumulated[indices] < 0, scale, accumulated


def assert_error_feedback(
    accumulated: np.ndarray, decoded: np.ndarray, residue: np.ndarray
) -> None:
    """decode(encode(G)) + R_new == G, to float32 rounding (and R_new = fl(G - q))."""
    np.testing.assert_array_equal(residue, accumulated - decoded)
    atol = 4 * EPS * float(np.max(np.abs(accumulated), initial=0.0))
    np.testing.assert_allclose(decoded + residue, accumulated, rtol=0, atol=atol)


# Finite, NaN-free float32 gradients; hypothesis' array fill repeats values,
# which produces ties with the bin maximum and whole bins of one value.
FLOATS = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def gradient_streams(draw: st.DrawFn) -> tuple[int, int, list[np.ndarray]]:
    """(numel, bin_size, several steps of gradients) with zero bins mixed in."""
    numel = draw(st.one_of(st.integers(1, 40), st.integers(1, 3000)))
    bin_size = draw(st.one_of(st.integers(2, 12), st.integers(2, 600)))
    steps = draw(st.integers(1, 4))
    grads = []
    for _ in range(steps):
        if draw(st.booleans()):
            grad = draw(hnp.arrays(np.float32, numel, elements=FLOATS))
        else:
            rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
            grad = heavy_tailed(rng, numel) * np.float32(draw(st.sampled_from([1e-6, 1, 1e3])))
        zero_bins = draw(st.lists(st.integers(0, numel // bin_size), max_size=3))
        for b in zero_bins:
            grad[b * bin_size : (b + 1) * bin_size] = 0
        grads.append(grad)
    return numel, bin_size, grads


# --------------------------------------------------------------------------- selection


def test_error_feedback_is_exact_over_steps() -> None:
    rng = np.random.default_rng(0)
    specs = [
        TensorSpec("conv", 5_000, kind="conv", bin_size=50),
        TensorSpec("fc", 12_345, kind="fc", bin_size=500),
        TensorSpec("bias", 17, kind="other", compress=False),
    ]
    state = make_state(specs)
    totals = KindCounters()
    for _ in range(8):
        grads = {s.name: heavy_tailed(rng, s.numel) for s in specs}
        before = [r.copy() for r in state.residues]
        encoded = encode_counted(grads, state)
        for counters in encoded.counts.values():
            totals.add(counters)
        decoded = decode(encoded.payload, specs)
        for i, spec in enumerate(specs):
            if spec.compress:
                accumulated = before[i] + grads[spec.name]
                assert_error_feedback(accumulated, decoded[spec.name], state.residues[i])
            else:
                np.testing.assert_array_equal(decoded[spec.name], grads[spec.name])
    assert 0 < totals.coded_sent < totals.elements
    assert totals.elements == 8 * sum(s.numel for s in specs)


@PROPERTY
@given(stream=gradient_streams(), rule=st.sampled_from(SCALE_RULES))
def test_selection_matches_per_bin_reference(stream: tuple, rule: str) -> None:
    numel, bin_size, grads = stream
    specs = [TensorSpec("t", numel, bin_size=bin_size)]
    state = make_state(specs, CodecConfig(scale_rule=rule))
    for grad in grads:
        before = state.residues[0].copy()
        ref_sent, ref_negative, ref_scale, accumulated = reference_step(
            before, grad, bin_size, rule
        )
        payload = encode({"t": grad}, state)
        indices, negative, scale, _ = sent_positions(payload, specs, 0)
        decoded = decode(payload, specs)["t"]
        residue = state.residues[0]

        np.testing.assert_array_equal(indices, ref_sent)
        np.testing.assert_array_equal(negative, ref_negative)
        assert_error_feedback(accumulated, decoded, residue)
        unsent = np.ones(numel, np.bool_)
        unsent[ref_sent] = False
        np.testing.assert_array_equal(residue[unsent], accumulated[unsent])
        if ref_scale is None:
            assert not decoded.any()
            continue
        assert scale == pytest.approx(ref_scale, rel=4 * EPS)
        expected = np.where(ref_negative, -ref_scale, ref_scale).astype(np.float32)
        atol = 4 * EPS * float(np.max(np.abs(accumulated)))
        np.testing.assert_allclose(decoded[ref_sent], expected, rtol=0, atol=atol)
        np.testing.assert_allclose(
            residue[ref_sent], accumulated[ref_sent] - expected, rtol=0, atol=atol
        )


@PROPERTY
@given(stream=gradient_streams())
def test_zero_bins_send_nothing_and_keep_their_residue(stream: tuple) -> None:
    numel, bin_size, grads = stream
    specs = [TensorSpec("t", numel, bin_size=bin_size)]
    state = make_state(specs)
    for grad in grads:
        accumulated = state.residues[0] + grad
        payload = encode({"t": grad}, state)
        indices, _, _, _ = sent_positions(payload, specs, 0)
        for b in range(0, numel, bin_size):
            if not accumulated[b : b + bin_size].any():
                assert not ((indices >= b) & (indices < b + bin_size)).any()
                assert not state.residues[0][b : b + bin_size].any()


@pytest.mark.parametrize("numel", [1, 7, 499, 500, 501, 1_003])
def test_all_zero_tensor_sends_nothing(numel: int) -> None:
    specs = [TensorSpec("t", numel, bin_size=500)]
    state = make_state(specs)
    for _ in range(3):
        payload = encode({"t": np.zeros(numel, np.float32)}, state)
        indices, _, scale, _ = sent_positions(payload, specs, 0)
        assert indices.size == 0 and scale == 0
        assert not decode(payload, specs)["t"].any()
        assert not state.residues[0].any()


def test_zero_length_compressed_tensor() -> None:
    specs = [TensorSpec("empty", 0), TensorSpec("x", 3, compress=False)]
    state = make_state(specs)
    grads = {"empty": np.zeros(0, np.float32), "x": np.ones(3, np.float32)}
    decoded = decode(encode(grads, state), specs)
    assert decoded["empty"].shape == (0,)
    np.testing.assert_array_equal(decoded["x"], grads["x"])


def test_bin_pushed_past_its_old_max_sends_more() -> None:
    """Adaptivity: no fixed threshold; a bin whose new gradient grows sends more."""
    rng = np.random.default_rng(1)
    bin_size, bins = 50, 2
    specs = [TensorSpec("t", bin_size * bins, kind="conv", bin_size=bin_size)]
    state = make_state(specs)
    calm = lambda: rng.normal(0, 1e-3, bin_size).astype(np.float32)  # noqa: E731

    def counts(grad: np.ndarray) -> np.ndarray:
        indices, _, _, _ = sent_positions(encode({"t": grad}, state), specs, 0)
        return np.bincount(indices // bin_size, minlength=bins)

    first = counts(np.concatenate([calm(), calm()]))
    old_max = float(np.abs(state.residues[0][bin_size:]).max())
    burst = calm()
    burst[::5] = np.float32(8 * old_max)  # 10 elements well past the old maximum
    second = counts(np.concatenate([calm(), burst]))
    assert second[1] >= 10
    assert second[1] > first[1]
    assert second[1] > second[0]


# --------------------------------------------------------------------------- dense paths


def test_dense_warmup_sends_everything_and_keeps_residues() -> None:
    rng = np.random.default_rng(2)
    specs = [TensorSpec("w", 3_001, bin_size=50), TensorSpec("b", 11, compress=False)]
    state = make_state(specs)
    for _ in range(3):  # build up non-zero residues first
        encode({s.name: heavy_tailed(rng, s.numel) for s in specs}, state)
    residues = [r.copy() for r in state.residues]
    assert residues[0].any()
    grads = {s.name: heavy_tailed(rng, s.numel) for s in specs}
    payload = encode(grads, state, dense=True)
    decoded = decode(payload, specs)
    for i, spec in enumerate(specs):
        assert sent_positions(payload, specs, i)[3] == DENSE
        np.testing.assert_array_equal(decoded[spec.name], grads[spec.name])
        np.testing.assert_array_equal(state.residues[i], residues[i])


def test_uncompressed_tensor_is_always_dense() -> None:
    rng = np.random.default_rng(3)
    specs = [TensorSpec("w", 2_000, bin_size=500), TensorSpec("b", 600, compress=False)]
    state = make_state(specs)
    assert state.residues[1].shape == (0,)
    for _ in range(4):
        grads = {s.name: heavy_tailed(rng, s.numel) for s in specs}
        payload = encode(grads, state)
        assert sent_positions(payload, specs, 0)[3] in (FIXED, RICE)
        assert sent_positions(payload, specs, 1)[3] == DENSE
        np.testing.assert_array_equal(decode(payload, specs)["b"], grads["b"])
    assert state.residues[1].shape == (0,)


# --------------------------------------------------------------------------- index coding


@st.composite
def index_sets(draw: st.DrawFn) -> tuple[int, np.ndarray]:
    """(numel, sorted unique indices): runs, huge gaps, first and last position."""
    numel = draw(st.one_of(st.integers(1, 64), st.integers(1, 200_000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([1e-4, 1e-3, 0.02, 0.3, 0.9]))
    mask = rng.random(numel) < density
    for _ in range(draw(st.integers(0, 3))):  # consecutive runs
        start = int(rng.integers(numel))
        mask[start : start + int(rng.integers(1, 40))] = True
    if draw(st.booleans()):
        mask[0] = True
    if draw(st.booleans()):
        mask[-1] = True
    if not mask.any():
        mask[int(rng.integers(numel))] = True
    return numel, np.flatnonzero(mask)


def assert_round_trip(coded: CodedIndices, indices: np.ndarray, negative: np.ndarray, n: int):
    got, got_negative = decode_indices(coded, count=indices.size, numel=n)
    np.testing.assert_array_equal(got, indices)
    np.testing.assert_array_equal(got_negative, negative)


@settings(max_examples=80 * SCALE, deadline=None)
@given(case=index_sets(), bin_size=st.sampled_from([2, 50, 500]), seed=st.integers(0, 99))
def test_index_coding_round_trip(case: tuple, bin_size: int, seed: int) -> None:
    numel, indices = case
    negative = np.random.default_rng(seed).random(indices.size) < 0.5
    sizes = {}
    for name, methods in METHOD_NAMES.items():
        coded = encode_indices(indices, negative, bin_size=bin_size, methods=methods)
        assert coded.method in methods
        assert_round_trip(coded, indices, negative, numel)
        sizes[name] = coded.data.size
    assert sizes["auto"] <= min(sizes["fixed"], sizes["rice"])


@settings(max_examples=40 * SCALE, deadline=None)
@given(case=index_sets(), width=st.integers(1, 12), param=st.integers(0, 12))
def test_every_width_and_rice_parameter_round_trips(case: tuple, width: int, param: int):
    """Small widths force escape words on every large gap; all parameters decode."""
    numel, indices = case
    negative = np.arange(indices.size) % 3 == 0
    gaps = np.diff(indices, prepend=-1) - 1
    assert_round_trip(ENCODERS[FIXED](gaps, negative, width), indices, negative, numel)
    assert_round_trip(ENCODERS[RICE](gaps, negative, param), indices, negative, numel)


@pytest.mark.parametrize("methods", list(METHOD_NAMES.values()), ids=list(METHOD_NAMES))
def test_index_coding_extremes(methods: tuple[int, ...]) -> None:
    numel = 2**32 - 1  # the largest tensor the wire format can describe
    for indices in ([0], [numel - 1], [0, numel - 1], [0, 1, 2, numel - 2, numel - 1]):
        indices = np.array(indices, np.int64)
        negative = np.ones(indices.size, np.bool_)
        coded = encode_indices(indices, negative, bin_size=500, methods=methods)
        assert_round_trip(coded, indices, negative, numel)
    empty = encode_indices(
        np.zeros(0, np.int64), np.zeros(0, np.bool_), bin_size=50, methods=methods
    )
    assert empty.data.size == 0
    assert_round_trip(empty, np.zeros(0, np.int64), np.zeros(0, np.bool_), 10)


def test_gap_totals_are_exact_sums_of_quotients() -> None:
    """The candidate codes' sizes come from sum(gap // d), read off tail counts;
    gaps past the histogram's cap take their own path."""
    rng = np.random.default_rng(21)
    cap = indexcoding._GapTotals.CAP
    cases = [
        np.zeros(1, np.int64),
        np.array([0, 1, 2, 3, 7, 8], np.int64),
        rng.integers(0, 1_000, 5_000),
        rng.integers(0, 3 * cap, 700),  # many past the cap
        np.array([cap - 1, cap, cap + 1, 10 * cap + 3], np.int64),
    ]
    divisors = [1, 2, 3, 7, 8, 31, 64, 511, 1_023, cap - 1, cap, cap + 1, 2**20]
    for gaps in cases:
        expected = [sum(int(g) // d for g in gaps) for d in divisors]
        assert indexcoding._GapTotals(gaps).totals(divisors) == expected


def paper_width(bin_size: int) -> int:
    return math.ceil(math.log2(bin_size))


def cover(rng: np.random.Generator, numel: int, window: int, extra: float) -> np.ndarray:
    """At least one index in every ``window`` positions, plus random extras."""
    mask = rng.random(numel) < extra
    starts = np.arange(0, numel, window)
    mask[starts + rng.integers(0, np.minimum(window, numel - starts))] = True
    return np.flatnonzero(mask)


def fixed_bits_per_element(indices: np.ndarray, bin_size: int) -> float:
    negative = np.zeros(indices.size, np.bool_)
    coded = encode_indices(indices, negative, bin_size=bin_size, methods=(FIXED,))
    return 8 * coded.data.size / indices.size


@pytest.mark.parametrize("bin_size", [50, 500])
@pytest.mark.parametrize("extra", [0.0, 0.01, 0.1])
def test_fixed_code_meets_paper_word_when_gaps_fit(bin_size: int, extra: float) -> None:
    """docs/CODEC.md's first wire-size target: ceil(log2 L_T) + 1 bits per sent element.

    Guaranteed when no gap reaches the escape word 2**w - 1, e.g. with a sent
    element in every half bin (two streams rounded up to bytes: 14 bits slack).
    """
    rng = np.random.default_rng(bin_size)
    numel = 200 * bin_size + 7
    indices = cover(rng, numel, (bin_size + 1) // 2, extra)
    bits = fixed_bits_per_element(indices, bin_size)
    assert bits * indices.size <= (paper_width(bin_size) + 1) * indices.size + 14


@pytest.mark.parametrize("bin_size", [50, 500])
@pytest.mark.parametrize("extra", [0.0, 0.002, 0.01, 0.1])
def test_fixed_code_with_one_element_per_bin(bin_size: int, extra: float) -> None:
    """One sent element per bin: gaps reach 2 L_T - 2 > 2**w - 1, so the paper's
    w + 1 bits cannot be guaranteed by a gap code; the cost stays within w + 2."""
    rng = np.random.default_rng(bin_size + 1)
    numel = 200 * bin_size + 7
    indices = cover(rng, numel, bin_size, extra)
    bits = fixed_bits_per_element(indices, bin_size)
    assert bits * indices.size <= (paper_width(bin_size) + 2) * indices.size + 14
    # the worst placement: first and last element of alternate bins
    ends = np.arange(0, numel // bin_size) * bin_size + np.where(
        np.arange(numel // bin_size) % 2, bin_size - 1, 0
    )
    assert fixed_bits_per_element(ends, bin_size) <= paper_width(bin_size) + 2 + 14 / ends.size


@pytest.mark.parametrize("rule", SCALE_RULES)
def test_auto_coding_never_larger_than_fixed_or_rice(rule: str) -> None:
    """Same gradients, three index codings: identical selection, auto smallest."""
    specs = [TensorSpec("conv", 20_000, bin_size=50), TensorSpec("fc", 30_000, bin_size=500)]
    states = {c: make_state(specs, CodecConfig(rule, c)) for c in METHOD_NAMES}
    rng = np.random.default_rng(4)
    for _ in range(5):
        grads = {s.name: heavy_tailed(rng, s.numel) for s in specs}
        payloads = {c: encode(grads, s) for c, s in states.items()}
        decoded = {c: decode(p, specs) for c, p in payloads.items()}
        for c in ("fixed", "rice"):
            assert payloads["auto"].size <= payloads[c].size
            for name in decoded[c]:
                np.testing.assert_array_equal(decoded[c][name], decoded["auto"][name])


# --------------------------------------------------------------------------- averaging


MEAN_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from adacomp_mpi import TensorSpec, decode_mean
    saved = np.load(sys.argv[1])
    specs = [TensorSpec("a", 4_001, bin_size=50), TensorSpec("b", 9, compress=False)]
    payloads = [saved[f"p{i}"] for i in range(len(saved.files))]
    for spec in specs:
        sys.stdout.buffer.write(decode_mean(payloads, specs)[spec.name].tobytes())
    """
)


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_decode_mean_is_bit_identical_everywhere(tmp_path, ranks: int) -> None:
    """The mean is the sum in rank order divided by N, to the bit, whether N
    is a power of two (each term divided first) or not."""
    specs = [TensorSpec("a", 4_001, bin_size=50), TensorSpec("b", 9, compress=False)]
    payloads = []
    for rank in range(ranks):
        rng = np.random.default_rng(100 + rank)
        state = make_state(specs)
        for _ in range(3):
            payload = encode({s.name: heavy_tailed(rng, s.numel) for s in specs}, state)
        payloads.append(payload)
    mean = [decode_mean(payloads, specs)[s.name] for s in specs]
    again = decode_mean([p.copy() for p in payloads], specs)
    assert b"".join(a.tobytes() for a in mean) == b"".join(again[s.name].tobytes() for s in specs)

    path = tmp_path / "payloads.npz"
    np.savez(path, **{f"p{i}": p for i, p in enumerate(payloads)})
    other = subprocess.run(
        [sys.executable, "-c", MEAN_SCRIPT, str(path)], capture_output=True, check=True
    )
    assert other.stdout == b"".join(a.tobytes() for a in mean)

    total = [np.zeros(s.numel, np.float32) for s in specs]
    for payload in payloads:
        for acc, spec in zip(total, specs, strict=True):
            acc += decode(payload, specs)[spec.name]
    for got, acc in zip(mean, total, strict=True):
        np.testing.assert_array_equal(got, acc / np.float32(len(payloads)))


@pytest.mark.parametrize("dense", [False, True])
def test_the_encoders_positions_are_what_decoding_gives(dense: bool) -> None:
    """``Encoded.positions`` stand in for decoding this rank's own payload:
    they are exactly the decoded positions and signs, and a mean that uses
    them is bit-identical to one that decodes every payload."""
    specs = [
        TensorSpec("a", 4_001, bin_size=50),
        TensorSpec("b", 9, compress=False),
        TensorSpec("c", 700, bin_size=500),
    ]
    rng = np.random.default_rng(7)
    states = [make_state(specs) for _ in range(2)]
    for _ in range(3):
        encoded = [
            encode_counted({s.name: heavy_tailed(rng, s.numel) for s in specs}, st, dense=dense)
            for st in states
        ]
    own = encoded[1]
    for record, positions, spec in zip(
        parse_payload(own.payload, specs), own.positions, specs, strict=True
    ):
        if record.coded is None or not record.sent:
            assert positions == ()
            continue
        indices, negative = decode_indices(record.coded, count=record.sent, numel=spec.numel)
        np.testing.assert_array_equal(positions[0], indices)
        np.testing.assert_array_equal(positions[1], negative)
    payloads = [e.payload for e in encoded]
    decoded = decode_mean(payloads, specs)
    out = {s.name: np.full(s.numel, np.nan, np.float32) for s in specs}
    mean_into(payloads, specs, out, known={1: own.positions})
    for spec in specs:
        assert out[spec.name].tobytes() == decoded[spec.name].tobytes()


def test_mean_of_no_payloads_is_an_error() -> None:
    specs = [TensorSpec("a", 10)]
    with pytest.raises(ValueError, match="no payloads"):
        decode_mean([], specs)
    out = {"a": np.ones(10, np.float32)}
    with pytest.raises(ValueError, match="no payloads"):
        mean_into([], specs, out)
    np.testing.assert_array_equal(out["a"], np.ones(10, np.float32))  # untouched


# --------------------------------------------------------------------------- non-finite input


NONFINITE_SPECS = [
    TensorSpec("conv", 150_001, kind="conv", bin_size=50),  # ten blocks, short last bin
    TensorSpec("fc", 4_003, kind="fc", bin_size=500),
    TensorSpec("bias", 9, kind="other", compress=False),
]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of ~16K elements, so a test tensor spans many (plans built after this)."""
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 1 << 14)


def warmed_state(seed: int = 11, steps: int = 3) -> CodecState:
    """A state with non-zero residues and plans built, as in training."""
    state = make_state(NONFINITE_SPECS)
    run_steps(state, seed=seed, steps=steps)
    return state


def residue_bytes(state: CodecState) -> list[bytes]:
    return [r.tobytes() for r in state.residues]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("name", "position"),
    [
        ("conv", 0),
        ("conv", 70_000),  # inside a middle block
        ("conv", 150_000),  # the last element, in the short last bin
        ("fc", 4_002),
        ("bias", 3),
    ],
)
@pytest.mark.parametrize("dense", [False, True], ids=["adacomp", "warmup"])
@pytest.mark.parametrize("api", [encode, encode_counted])
@pytest.mark.usefixtures("small_blocks")
def test_nonfinite_gradient_raises_and_leaves_state_untouched(
    bad: float, name: str, position: int, dense: bool, api
) -> None:
    state, twin = warmed_state(), warmed_state()  # twin: never sees the bad step
    rng = np.random.default_rng(12)
    grads = {s.name: heavy_tailed(rng, s.numel) for s in state.specs}
    grads[name][position] = bad
    with pytest.raises(ValueError, match=rf"gradient '{name}'.*(NaN|infinity)"):
        api(grads, state, dense=dense)
    assert residue_bytes(state) == residue_bytes(twin)  # bit for bit
    # ... and the state goes on exactly like the twin
    assert run_steps(state, seed=13, steps=2) == run_steps(twin, seed=13, steps=2)
    assert residue_bytes(state) == residue_bytes(twin)


def test_nonfinite_tensor_after_encoded_ones_rolls_back_all() -> None:
    """The last tensor is bad: the ones encoded before it keep their old residues."""
    specs = [TensorSpec("a", 3_000, bin_size=50), TensorSpec("b", 2_000, bin_size=500)]
    state, twin = make_state(specs), make_state(specs)
    run_steps(state, seed=14, steps=2)
    run_steps(twin, seed=14, steps=2)
    grads = {"a": np.ones(3_000, np.float32), "b": np.full(2_000, np.nan, np.float32)}
    with pytest.raises(ValueError, match="'b'"):
        encode(grads, state)
    assert residue_bytes(state) == residue_bytes(twin)
    with pytest.raises(ValueError, match="'b'"):  # twice: nothing accumulates
        encode(grads, state)
    assert run_steps(state, seed=15, steps=2) == run_steps(twin, seed=15, steps=2)


def test_residue_overflow_raises_and_leaves_state_untouched() -> None:
    """Finite inputs whose sum G = R + dW overflows float32 are refused too."""
    specs = [TensorSpec("w", 1_000, bin_size=50)]
    state = make_state(specs)
    state.load_state_dict({"residues": {"w": np.full(1_000, 3e38, np.float32)}})
    before = residue_bytes(state)
    with pytest.raises(ValueError, match=r"'w'.*overflows"):
        encode({"w": np.full(1_000, 3e38, np.float32)}, state)
    assert residue_bytes(state) == before


def test_candidate_scan_finds_every_position() -> None:
    """The candidate scan (plain below WORD_SCAN_MIN, word-then-byte from it)
    equals ``flatnonzero``."""
    rng = np.random.default_rng(15)
    word_scan = blocks.WORD_SCAN_MIN
    for density in (0.0, 0.001, 0.03, 0.07, 0.3, 1.0):
        for size in (1, 7, 8, 9, 4_095, word_scan - 1, word_scan, word_scan + 9, 65_536):
            mask = np.zeros(-(-size // 8) * 8 + 8, np.bool_)
            mask[:size] = rng.random(size) < density
            mask[size:] = True  # junk past the end must be ignored
            expected = np.flatnonzero(mask[:size])
            np.testing.assert_array_equal(blocks._positions(mask, size), expected)


# Payload and residue digests of a fixed stream, recorded with the codec before
# the speed work: encode must stay byte-identical (the trainer's parameter
# digests depend on it).
GOLDEN = {
    "mean_abs/auto": "51b0b957d2ae2ecc10ba8911b9efaeb87ce476463a43ec92bbdcb26ad3599c14",
    "mean_abs/fixed": "8dc88351f986e495433341ac884c354ac8fc00777d72d8f17f6f7672821c136c",
    "mean_abs/rice": "51b0b957d2ae2ecc10ba8911b9efaeb87ce476463a43ec92bbdcb26ad3599c14",
    "mean_bin_max/auto": "45bea95f2442f3f0c6aeb9516f97932f4a7159d44a2a47734718ed7be117ade2",
    "mean_bin_max/fixed": "6112ffa7332f62ad88456952766c7c0c78870adf258ac89d6e8bf58a154a85bc",
    "mean_bin_max/rice": "45bea95f2442f3f0c6aeb9516f97932f4a7159d44a2a47734718ed7be117ade2",
}


@pytest.mark.parametrize("block_elements", [blocks.BLOCK_ELEMENTS, 1 << 12, 50])
@pytest.mark.parametrize("config", list(GOLDEN))
def test_payloads_and_residues_match_recorded_digests(
    config: str, block_elements: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same bytes whatever the block size: blocking is invisible in the results."""
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", block_elements)
    rule, coding = config.split("/")
    specs = [
        TensorSpec("conv", 5_000, kind="conv", bin_size=50),
        TensorSpec("fc", 12_345, kind="fc", bin_size=500),
        TensorSpec("emb", 3_001, kind="embedding", bin_size=500),
        TensorSpec("big", 150_001, kind="conv", bin_size=50),
        TensorSpec("bias", 17, kind="other", compress=False),
    ]
    rng = np.random.default_rng(2018)
    state = make_state(specs, CodecConfig(rule, coding))
    sha = hashlib.sha256()
    for step in range(6):
        grads = {s.name: heavy_tailed(rng, s.numel) for s in specs}
        grads["emb"][500:2000] = 0  # rows without gradient: zero bins
        sha.update(encode(grads, state, dense=step == 0).tobytes())
    for residue in state.residues:
        sha.update(residue.tobytes())
    assert sha.hexdigest() == GOLDEN[config]


# --------------------------------------------------------------------------- state


def run_steps(state: CodecState, seed: int, steps: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        encode({s.name: heavy_tailed(rng, s.numel) for s in state.specs}, state).tobytes()
        for _ in range(steps)
    ]


def test_state_dict_round_trip_continues_identically() -> None:
    specs = [
        TensorSpec("c", 3_000, kind="conv", bin_size=50),
        TensorSpec("f", 5_003, kind="fc", bin_size=500),
        TensorSpec("b", 10, kind="other", compress=False),
    ]
    original = make_state(specs)
    run_steps(original, seed=5, steps=4)
    saved = pickle.loads(pickle.dumps(original.state_dict()))
    restored = make_state(specs)
    restored.load_state_dict(saved)
    assert run_steps(restored, seed=6, steps=3) == run_steps(original, seed=6, steps=3)
    for a, b in zip(restored.residues, original.residues, strict=True):
        np.testing.assert_array_equal(a, b)
    # the saved dict is a snapshot, not a view of the live residues
    assert not np.array_equal(saved["residues"]["f"], original.residues[1])


@pytest.mark.parametrize(
    "other",
    [
        [TensorSpec("c", 100, bin_size=50), TensorSpec("g", 200)],  # renamed
        [TensorSpec("c", 100, bin_size=50), TensorSpec("f", 201)],  # resized
        [TensorSpec("c", 100, bin_size=50)],  # fewer tensors
        [TensorSpec("c", 100, bin_size=50), TensorSpec("f", 200, compress=False)],
    ],
)
def test_load_state_dict_rejects_another_layout(other: list[TensorSpec]) -> None:
    specs = [TensorSpec("c", 100, bin_size=50), TensorSpec("f", 200)]
    state = make_state(specs)
    run_steps(state, seed=7, steps=1)
    with pytest.raises(ValueError, match=r"layout|shape"):
        make_state(other).load_state_dict(state.state_dict())


def test_config_and_spec_validation() -> None:
    with pytest.raises(ValueError, match="scale rule"):
        CodecConfig(scale_rule="median")
    with pytest.raises(ValueError, match="index coding"):
        CodecConfig(index_coding="huffman")
    with pytest.raises(ValueError, match="L_T"):
        TensorSpec("t", 10, bin_size=1)
    state = make_state([TensorSpec("t", 10)])
    with pytest.raises(ValueError, match="elements"):
        encode({"t": np.zeros(11, np.float32)}, state)


# --------------------------------------------------------------------------- hygiene


@pytest.mark.parametrize(
    "modules",
    ["adacomp_mpi", "adacomp_mpi.codec", "adacomp_mpi.codec, adacomp_mpi.dist.exchange"],
)
def test_codec_imports_neither_torch_nor_mpi4py(modules: str) -> None:
    code = (
        f"import sys; import {modules}; "
        "bad = sorted(m for m in ('torch', 'mpi4py') if m in sys.modules); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"{modules} imported: {result.stdout}{result.stderr}"
