"""Fuzz the payload decoder: mutate valid payloads, expect PayloadError or sane output.

    python scripts/fuzz_decoder.py --iterations 200000 --seed 1

Each iteration takes a valid payload (several layouts, index codings, scale
rules, dense warm-up and empty selections), applies 1-4 random mutations
(truncate, extend, flip bits, overwrite bytes, write an interesting integer
or float into a record-header field, splice in bytes from another payload),
and recomputes the header's body length and CRC half the time so the
structural checks behind the CRC are reached. Outcomes:

* accepted: decoded, every shape right, compressed tensors finite;
* rejected: ``PayloadError`` and the output arrays untouched;
* crash: anything else (another exception, a bad accept, a partial write).

Exits 1 if any crash occurred, and prints the first few with a hex dump.
"""

from __future__ import annotations

import re
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from adacomp_mpi import CodecConfig, PayloadError, TensorSpec, accumulate, encode, make_state
from adacomp_mpi.codec.wire import HEADER, HEADER_BYTES, RECORD_HEADER_BYTES, parse_payload

RECORD_FIELDS = ((0, "<B"), (1, "<B"), (2, "<H"), (4, "<I"), (8, "<I"), (12, "<f"), (16, "<I"))
INTERESTING_INTS = (0, 1, 2, 7, 8, 31, 32, 33, 63, 64, 255, 256, 2**15, 2**16 - 1, 2**31, 2**32 - 1)
INTERESTING_FLOATS = (0.0, -0.0, -1.0, 1e-45, 3.4e38, float("inf"), float("-inf"), float("nan"))


# Values inside PayloadError messages (numbers, nan/inf, byte strings), so that
# messages of one kind are counted together; the tensor name prefix is dropped.
TENSOR_PREFIX = re.compile(r"^[\w.]+: ")
MESSAGE_VALUES = re.compile(r"\(magic .*\)$|-?(nan|inf)|-?\d+(\.\d+)?(e[-+]?\d+)?")


@dataclass(frozen=True)
class Sample:
    """A valid payload, its layout, and where its record headers start."""

    payload: bytes
    specs: tuple[TensorSpec, ...]
    records: tuple[int, ...]


LAYOUTS: dict[str, tuple[TensorSpec, ...]] = {
    "mixed": (
        TensorSpec("conv", 2_000, kind="conv", bin_size=50),
        TensorSpec("fc", 5_003, kind="fc", bin_size=500),
        TensorSpec("bias", 20, kind="other", compress=False),
        TensorSpec("empty", 0, kind="fc"),
    ),
    "tiny": (TensorSpec("t", 67, kind="conv", bin_size=8),),
    "wide-bins": (
        TensorSpec("lstm", 3_000, kind="recurrent", bin_size=600),
        TensorSpec("pairs", 64, kind="fc", bin_size=2),
    ),
}


def record_offsets(payload: np.ndarray, specs: tuple[TensorSpec, ...]) -> tuple[int, ...]:
    offsets, offset = [], HEADER_BYTES
    for record in parse_payload(payload, specs):
        offsets.append(offset)
        body = record.dense.nbytes if record.coded is None else record.coded.data.size
        offset += RECORD_HEADER_BYTES + body + (-body % 4)
    return tuple(offsets)


def corpus(seed: int) -> list[Sample]:
    """Valid payloads over layouts x codings x scale rules x steps, plus edge cases."""
    rng = np.random.default_rng(seed)
    samples = []
    for specs in LAYOUTS.values():
        for coding in ("auto", "fixed", "rice"):
            for rule in ("mean_abs", "mean_bin_max"):
                state = make_state(specs, CodecConfig(scale_rule=rule, index_coding=coding))
                for step in range(3):
                    grads = {
                        s.name: (rng.standard_t(2 + step, s.numel) * 1e-3).astype(np.float32)
                        for s in specs
                    }
                    payload = encode(grads, state, dense=step == 0 and rule == "mean_abs")
                    samples.append(Sample(payload.tobytes(), specs, record_offsets(payload, specs)))
        zero = {s.name: np.zeros(s.numel, np.float32) for s in specs}
        payload = encode(zero, make_state(specs))
        samples.append(Sample(payload.tobytes(), specs, record_offsets(payload, specs)))
    return samples


def fix_header(data: bytearray) -> bytearray:
    """Make the header's body length and CRC match whatever the body now is."""
    if len(data) < HEADER_BYTES:
        return data
    magic, version, flags, records, fingerprint, _, _ = HEADER.unpack_from(data)
    body = bytes(data[HEADER_BYTES:])
    HEADER.pack_into(
        data, 0, magic, version, flags, records, fingerprint, len(body), zlib.crc32(body)
    )
    return data


def mutate(rng: np.random.Generator, sample: Sample, donor: Sample) -> bytes:
    data = bytearray(sample.payload)
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(6))
        position = int(rng.integers(max(len(data), 1)))
        if op == 0:  # truncate
            del data[position:]
        elif op == 1:  # extend
            data += rng.bytes(int(rng.integers(1, 65)))
        elif op == 2 and data:  # flip 1-8 bits
            for _ in range(int(rng.integers(1, 9))):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        elif op == 3 and data:  # overwrite 1-8 bytes
            chunk = rng.bytes(int(rng.integers(1, 9)))
            data[position : position + len(chunk)] = chunk
        elif op == 4 and sample.records:  # an interesting value in a record field
            start, fmt = RECORD_FIELDS[int(rng.integers(len(RECORD_FIELDS)))]
            at = sample.records[int(rng.integers(len(sample.records)))] + start
            if fmt == "<f":
                value: float = INTERESTING_FLOATS[int(rng.integers(len(INTERESTING_FLOATS)))]
            else:
                value = INTERESTING_INTS[int(rng.integers(len(INTERESTING_INTS)))]
                value %= 1 << (8 * struct.calcsize(fmt))
            if at + struct.calcsize(fmt) <= len(data):
                struct.pack_into(fmt, data, at, value)
        elif op == 5:  # splice bytes from another payload
            start = int(rng.integers(len(donor.payload)))
            chunk = donor.payload[start : start + int(rng.integers(1, 33))]
            data[position : position + len(chunk)] = chunk
    if rng.random() < 0.5:
        fix_header(data)
    return bytes(data)


def check(data: bytes, specs: tuple[TensorSpec, ...]) -> str:
    """'accepted' or 'rejected: <message shape>'; raises AssertionError on a bad result."""
    out = {s.name: np.zeros(s.numel, np.float32) for s in specs}
    try:
        with np.errstate(all="ignore"):  # dense records may carry nan/inf bits
            accumulate(np.frombuffer(data, np.uint8), specs, out)
    except PayloadError as error:
        assert not any(a.any() for a in out.values()), "PayloadError raised after writing output"
        message = TENSOR_PREFIX.sub("", str(error), count=1)
        return "rejected: " + MESSAGE_VALUES.sub("N", message)
    records = parse_payload(np.frombuffer(data, np.uint8), specs)
    for spec, array, record in zip(specs, out.values(), records, strict=True):
        assert array.shape == (spec.numel,) and array.dtype == np.float32, spec.name
        # a dense record carries raw float32 values; a coded one only +-scale
        assert record.coded is None or np.isfinite(array).all(), f"{spec.name}: non-finite"
    return "accepted"


@click.command()
@click.option("--iterations", default=20_000, show_default=True, help="Mutated payloads to try.")
@click.option("--seed", default=0, show_default=True, help="Seed of the NumPy RNG.")
@click.option("--show", default=3, show_default=True, help="Crashes to print in full.")
@click.option(
    "--save",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write crashing payloads to (crash-N.bin).",
)
def main(iterations: int, seed: int, show: int, save: Path | None) -> None:
    """Fuzz the AdaComp payload decoder; exit 1 on any crash."""
    rng = np.random.default_rng(seed)
    samples = corpus(seed)
    outcomes: Counter[str] = Counter()
    crashes = 0
    started = time.perf_counter()
    for _ in range(iterations):
        sample = samples[int(rng.integers(len(samples)))]
        donor = samples[int(rng.integers(len(samples)))]
        data = mutate(rng, sample, donor)
        try:
            outcomes[check(data, sample.specs)] += 1
        except Exception:  # anything but PayloadError is a finding
            crashes += 1
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"crash-{crashes}.bin").write_bytes(data)
            if crashes <= show:
                click.echo(f"CRASH on {len(data)} bytes: {data[:64].hex()}...", err=True)
                click.echo(traceback.format_exc(), err=True)
    elapsed = time.perf_counter() - started
    rejected = sum(n for k, n in outcomes.items() if k.startswith("rejected"))
    click.echo(
        f"iterations {iterations} seed {seed} corpus {len(samples)} in {elapsed:.1f} s: "
        f"accepted {outcomes['accepted']} rejected {rejected} crashes {crashes}"
    )
    for reason, count in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        if reason != "accepted":
            click.echo(f"  {count:8d}  {reason}")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
