"""Reducer under real mpiexec: statistics equal numpy's over the gathered values.

Every assertion runs on data that is identical on every rank (results are
identical by contract, inputs are allgathered), so a failure fails on all
ranks together and never leaves one rank waiting in a collective.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

MPI = pytest.importorskip("mpi4py.MPI")


@pytest.fixture
def comm():
    c = MPI.COMM_WORLD.Dup()
    yield c
    c.Free()


def make_reducer(comm, **kw):
    from ezpz.history.reduce import Reducer

    kw.setdefault("hierarchical_threshold", 384)
    return Reducer(comm, **kw)


def gathered(comm, keys, values):
    """Per key, the values of the ranks that logged it, in rank order."""
    per_rank = comm.allgather(
        dict(zip(keys, np.asarray(values, dtype=float).tolist(), strict=True))
    )
    out: dict[str, np.ndarray] = {}
    for d in per_rank:
        for k, v in d.items():
            out.setdefault(k, [])
            out[k].append(v)
    return {k: np.array(v) for k, v in out.items()}


def exact_std(values):
    """Population std in exact rational arithmetic (numpy's own rounds the mean)."""
    xs = [Fraction(float(v)) for v in values]
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def same_on_all_ranks(comm, result):
    payload = (result.keys, {s: a.tobytes() for s, a in result.stats.items()})
    every = comm.allgather(payload)
    assert all(p == every[0] for p in every), "results differ between ranks"


def check_against_numpy(comm, result, keys, values, rtol=1e-12):
    same_on_all_ranks(comm, result)
    ref = gathered(comm, keys, values)
    assert set(result.keys) == set(ref)
    for i, key in enumerate(result.keys):
        g = ref[key]
        with np.errstate(invalid="ignore"):
            want = {"mean": np.mean(g), "max": np.max(g), "min": np.min(g), "std": np.std(g)}
        for suffix, expected in want.items():
            got = result.stats[suffix][i]
            scale = max(abs(np.mean(g)), 1.0) if suffix == "std" else 1.0
            np.testing.assert_allclose(
                got, expected, rtol=rtol, atol=1e-15 * scale, err_msg=f"{key}/{suffix}"
            )
        if "count" in result.stats:
            assert result.stats["count"][i] == len(g), key
        nonfinite = int((~np.isfinite(g)).sum())
        assert result.stats.get("nonfinite", np.zeros(len(result.keys)))[i] == nonfinite, key


def test_random_inputs_match_numpy(comm):
    rank = comm.Get_rank()
    reducer = make_reducer(comm)
    keys = tuple(f"m{i}" for i in range(10))
    for step in range(8):
        rng = np.random.default_rng(1000 * step + rank)
        scales = 10.0 ** np.arange(-4, 6)
        values = rng.normal(size=10) * scales + rng.normal(size=10) * scales
        result = reducer.reduce(keys, values, step)
        assert result.keys == keys
        assert set(result.stats) == {"mean", "max", "min", "std"}
        check_against_numpy(comm, result, keys, values)
    reducer.close()


@pytest.mark.parametrize("hier", [False, True], ids=["flat", "hierarchical"])
def test_large_mean_small_std_is_accurate(comm, hier):
    """Naive E[x²]-E[x]² would lose every digit here; std within 1e-9 of numpy."""
    rank = comm.Get_rank()
    kw = {"hierarchical_threshold": 0, "ranks_per_node": 2} if hier else {}
    reducer = make_reducer(comm, **kw)
    keys = ("loss", "timestamp", "neg", "tiny")
    for step in range(6):
        rng = np.random.default_rng(7 * step + rank)
        values = np.array(
            [
                1e5 + 1e-3 * rng.normal(),
                1.7e9 + 0.37 * step + 1e-2 * rng.normal(),  # a counter: moves every step
                -3e7 + (50.0 if step == 3 else 0.0) + 1e-2 * rng.normal(),  # jumps once
                1e-300 * (1 + rng.random()),
            ]
        )
        result = reducer.reduce(keys, values, step)
        same_on_all_ranks(comm, result)
        ref = gathered(comm, keys, values)
        for i, key in enumerate(keys):
            want = np.std(ref[key])
            got = result.stats["std"][i]
            exact = exact_std(ref[key])
            assert abs(got - exact) <= 5e-10 * exact, (step, key, got, exact)
            # numpy's two-pass std rounds the mean first (~1e-9 off at 1.7e9 with
            # spread 1e-3), so it is the reference only where it is itself exact.
            if abs(want - exact) <= 1e-10 * exact:
                assert abs(got - want) <= 1e-9 * want, (step, key, got, want)
            np.testing.assert_allclose(result.stats["mean"][i], np.mean(ref[key]), rtol=1e-15)
    reducer.close()


def test_steady_path_uses_two_buffer_collectives(comm):
    """One MAX and one SUM buffer reduction per step, set up once per key layout.

    With MPI-4 persistent collectives the two ``Allreduce_init`` requests are
    made when the layout is agreed, and a steady step only starts and waits on
    them: it calls nothing on the communicator, and nothing is pickled.
    Without them, each step issues the same pair as two ``Iallreduce``.
    """
    calls: list[str] = []

    def name_of(op):
        return "SUM" if op == MPI.SUM else "MAX"

    class Counting(MPI.Intracomm):
        def Iallreduce(self, sendbuf, recvbuf, op=MPI.SUM):
            calls.append("Iallreduce:" + name_of(op))
            return super().Iallreduce(sendbuf, recvbuf, op)

        def Allreduce_init(self, sendbuf, recvbuf, op=MPI.SUM, *args):
            calls.append("Allreduce_init:" + name_of(op))
            return super().Allreduce_init(sendbuf, recvbuf, op, *args)

        def __getattribute__(self, name):
            if name in {
                "Allreduce",
                "allreduce",
                "allgather",
                "bcast",
                "gather",
                "Allgather",
                "Bcast",
            }:
                calls.append(name)
            return super().__getattribute__(name)

    counting = Counting(comm)
    reducer = make_reducer(counting)
    persistent = "Allreduce_init:MAX" in calls
    steady = [] if persistent else ["Iallreduce:MAX", "Iallreduce:SUM"]
    keys = ("loss", "acc", "dt", "lr")
    rank = comm.Get_rank()
    for step in range(5):
        calls.clear()
        values = np.array([1.0 + rank + step, 0.5 * rank, 0.01 * (rank + 1), 1e-3])
        result = reducer.reduce(keys, values, step)
        if step == 0 and persistent:  # a new layout: its two requests, made once
            assert calls.count("Allreduce_init:MAX") == calls.count("Allreduce_init:SUM") == 1
        if step > 0:
            assert calls == steady, calls
        check_against_numpy(comm, result, keys, values)
    # Same keys in another order on some ranks stays on the fast path.
    calls.clear()
    order = keys if rank % 2 == 0 else keys[::-1]
    values = np.array([float(rank + len(k)) for k in order])
    result = reducer.reduce(order, values, 5)
    assert calls == steady, calls
    check_against_numpy(comm, result, order, values)
    reducer.close()


def test_replicated_values_are_exact(comm):
    reducer = make_reducer(comm)
    for step, lr in enumerate([0.1, 3e-4, 1e-5, 7.0]):
        result = reducer.reduce(("lr", "iter"), np.array([lr, float(step)]), step)
        assert result.stats["mean"].tolist() == [lr, float(step)]
        assert result.stats["std"].tolist() == [0.0, 0.0]
        assert result.stats["max"].tolist() == result.stats["min"].tolist() == [lr, float(step)]
    reducer.close()


def test_mismatched_key_sets_and_orders(comm):
    rank, size = comm.Get_rank(), comm.Get_size()
    reducer = make_reducer(comm)
    base = ("loss", "acc", "dt")
    for step in range(6):
        keys = list(base)
        if rank == 0 and step % 2 == 1:
            keys.append("eval/acc")  # rank 0 evaluates every other step
        if rank == size - 1 and step >= 2:
            keys.remove("acc")  # the last rank stops logging a metric
        if rank % 2 == 1:
            keys.reverse()
        if rank == 1 and step == 4:
            keys = []  # a rank with no scalars at all still takes part
        keys = tuple(keys)
        values = np.array([100.0 * step + 10.0 * rank + len(k) for k in keys])
        result = reducer.reduce(keys, values, step)
        check_against_numpy(comm, result, keys, values)
        ref = gathered(comm, keys, values)
        partial = any(len(v) < size for v in ref.values())
        assert ("count" in result.stats) == partial
    reducer.close()


def test_no_rank_logs_anything(comm):
    reducer = make_reducer(comm)
    result = reducer.reduce((), np.empty(0), 0)
    assert result.keys == ()
    assert all(a.size == 0 for a in result.stats.values())
    result = reducer.reduce(("a",), np.array([float(comm.Get_rank())]), 1)
    check_against_numpy(comm, result, ("a",), [float(comm.Get_rank())])
    reducer.close()


def test_a_key_never_lands_on_another_key(comm):
    """Values encode their key: any mix-up would show in the statistics."""
    rank = comm.Get_rank()
    reducer = make_reducer(comm)
    rng = np.random.default_rng(rank)
    names = [f"k{i}" for i in range(12)]
    for step in range(10):
        chosen = [k for k in names if rng.random() < 0.6]
        rng.shuffle(chosen)
        keys = tuple(chosen)
        values = np.array([float(k[1:]) for k in keys])
        result = reducer.reduce(keys, values, step)
        same_on_all_ranks(comm, result)
        for i, key in enumerate(result.keys):
            for suffix in ("mean", "max", "min"):
                assert result.stats[suffix][i] == float(key[1:])
            assert result.stats["std"][i] == 0.0
    reducer.close()


NONFINITE_CASES = {
    "nan_on_one_rank": lambda r: np.nan if r == 1 else float(r),
    "posinf": lambda r: np.inf if r == 0 else float(r),
    "both_infs": lambda r: np.inf if r == 0 else (-np.inf if r == 1 else 1.0),
    "all_nan": lambda r: np.nan,
    "neginf_and_nan": lambda r: -np.inf if r == 0 else np.nan,
}


@pytest.mark.parametrize("case", sorted(NONFINITE_CASES))
def test_nonfinite_follow_numpy_semantics(comm, case):
    rank = comm.Get_rank()
    reducer = make_reducer(comm)
    value = NONFINITE_CASES[case](rank)
    keys = ("x", "ok")
    values = np.array([value, 2.0 + rank])
    result = reducer.reduce(keys, values, 0)
    check_against_numpy(comm, result, keys, values)
    assert "nonfinite" in result.stats
    # A finite step afterwards is back to normal (the shift recovered).
    result = reducer.reduce(keys, np.array([1.0 + rank, 2.0]), 1)
    check_against_numpy(comm, result, keys, np.array([1.0 + rank, 2.0]))
    assert "nonfinite" not in result.stats
    reducer.close()


def test_nonfinite_result_independent_of_rank_order(comm):
    """The same multiset of values on permuted ranks gives bit-identical statistics."""
    rank, size = comm.Get_rank(), comm.Get_size()
    pool = [np.nan, np.inf, 1.5, -2.0, np.inf, 3.0][:size]
    outs = []
    for shift in range(size):
        reducer = make_reducer(comm)
        v = pool[(rank + shift) % size]
        result = reducer.reduce(("a", "b"), np.array([v, -v if np.isfinite(v) else 0.0]), 0)
        outs.append({s: a.tobytes() for s, a in result.stats.items()})
        reducer.close()
    assert all(o == outs[0] for o in outs)


@pytest.mark.parametrize("ranks_per_node", [None, 1, 2, 3], ids=["shared-memory", "1", "2", "3"])
def test_hierarchical_equals_flat(comm, ranks_per_node, monkeypatch):
    monkeypatch.delenv("EZPZ_RANKS_PER_NODE", raising=False)  # None: real Split_type nodes
    rank = comm.Get_rank()
    flat = make_reducer(comm, extrema=("dt",))
    hier = make_reducer(
        comm, hierarchical_threshold=1, ranks_per_node=ranks_per_node, extrema=("dt",)
    )
    assert hier.hierarchical and not flat.hierarchical
    for step in range(5):
        rng = np.random.default_rng(31 * step + rank)
        keys = ("loss", "dt", "big") + (("eval/x",) if rank == 0 and step == 2 else ())
        values = np.concatenate(
            [[rng.normal(), rng.random(), 1e6 + rng.normal() * 1e-4], [1.0] * (len(keys) - 3)]
        )
        if step == 3 and rank == 1:
            values[0] = np.nan
        a = flat.reduce(keys, values, step)
        b = hier.reduce(keys, values, step)
        same_on_all_ranks(comm, b)
        assert a.keys == b.keys and set(a.stats) == set(b.stats)
        for suffix in a.stats:
            np.testing.assert_allclose(b.stats[suffix], a.stats[suffix], rtol=1e-12, atol=0)
        check_against_numpy(comm, b, keys, values)
    flat.close()
    hier.close()


def test_hierarchical_from_environment(comm, monkeypatch):
    monkeypatch.setenv("EZPZ_HIERARCHICAL_THRESHOLD", "1")
    monkeypatch.setenv("EZPZ_RANKS_PER_NODE", "2")
    from ezpz.history.reduce import Reducer

    reducer = Reducer(comm)
    assert reducer.hierarchical
    assert reducer.topology.node.Get_size() == min(2, comm.Get_size() - 2 * (comm.Get_rank() // 2))
    values = np.array([float(comm.Get_rank()) ** 2])
    check_against_numpy(comm, reducer.reduce(("sq",), values, 0), ("sq",), values)
    reducer.close()
    monkeypatch.setenv("EZPZ_HIERARCHICAL_THRESHOLD", str(comm.Get_size()))
    reducer = Reducer(comm)
    assert not reducer.hierarchical  # flat up to and including the threshold
    reducer.close()


def test_sub_communicators(comm):
    rank = comm.Get_rank()
    stage = comm.Split(color=rank % 2, key=rank)
    reducer = make_reducer(stage)
    values = np.array([float(rank), 10.0 * rank])
    result = reducer.reduce(("loss", "grad"), values, 0)
    check_against_numpy(stage, result, ("loss", "grad"), values)
    members = comm.allgather(rank % 2)
    expected = np.mean([r for r, c in enumerate(members) if c == rank % 2])
    assert result.stats["mean"][0] == expected
    reducer.close()
    stage.Free()


def test_rank_extrema(comm):
    rank, size = comm.Get_rank(), comm.Get_size()
    reducer = make_reducer(comm, extrema=("dt", "train/dt", "missing"))
    straggler = size - 1
    keys = ("loss", "dt", "train/dt")
    for step in range(3):
        dt = 5.0 if rank == straggler else 1.0 + 0.1 * rank
        values = np.array([float(rank), dt, 2.0])  # train/dt ties everywhere
        result = reducer.reduce(keys, values, step)
        same_on_all_ranks(comm, result)
        i, j = keys.index("dt"), keys.index("train/dt")
        assert result.stats["max_rank"][i] == straggler
        assert result.stats["min_rank"][i] == 0
        assert (
            result.stats["max_rank"][j] == 0 and result.stats["min_rank"][j] == 0
        )  # ties: lowest rank
        assert np.isnan(result.stats["max_rank"][keys.index("loss")])
        entries = result.entries()
        assert entries["dt/max_rank"] == straggler and "loss/max_rank" not in entries
    # NaN on the would-be max rank: the max rank is the largest non-NaN value's.
    values = np.array([0.0, np.nan if rank == straggler else float(rank), 2.0])
    result = reducer.reduce(keys, values, 3)
    assert result.stats["max_rank"][1] == size - 2
    reducer.close()


@pytest.mark.parametrize("hier", [False, True], ids=["flat", "hierarchical"])
def test_timeout_path_gives_same_results(comm, hier):
    """With a timeout the collectives are non-blocking and polled; results unchanged."""
    rank = comm.Get_rank()
    kw = {"hierarchical_threshold": 1, "ranks_per_node": 2} if hier else {}
    polled = make_reducer(comm, timeout=60, extrema=("b",), **kw)
    blocking = make_reducer(comm, **kw)
    assert polled.timeout == 60.0 and blocking.timeout is None
    for step in range(3):
        keys = ("a", "b") if rank or step != 1 else ("a", "b", "c")
        values = np.arange(len(keys), dtype=float) * (rank + 1) + step
        p = polled.reduce(keys, values, step)
        q = blocking.reduce(keys, values, step)
        assert p.keys == q.keys
        for s in ("mean", "max", "min", "std"):
            assert p.stats[s].tobytes() == q.stats[s].tobytes()
        check_against_numpy(comm, p, keys, values)
    polled.close()
    blocking.close()


def test_small_layout_step_matches_numpy_path_bit_for_bit(comm):
    """The pure-Python step of small layouts gives the numpy path's results exactly.

    Two reducers see the same inputs; one never takes the small step
    (``small_layout = 0``). The steps cover what the small step hands back to
    the numpy path (NaN on one rank, a key one rank skips, a new key, a
    rounding-bound miss) and what it must carry over (counter-like keys whose
    shift is extrapolated, replicated values), so the two keep agreeing after
    every hand-over. Inputs are Python lists, as History passes them.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    small = make_reducer(comm)
    numpy_path = make_reducer(comm)
    numpy_path.small_layout = 0
    rng = np.random.default_rng(1234 + rank)
    took_small = 0
    resums: list[int] = []
    resum_small = small._resum_small
    small._resum_small = lambda *a: (resums.append(a[-1]), resum_small(*a))[1]
    ill_small = small._finish_small_ill
    ill_steps: list[int] = []
    small._finish_small_ill = lambda xs, step: (ill_steps.append(step), ill_small(xs, step))[1]
    base = ("loss", "lr", "iter", "tokens", "offset", "sched")
    for step in range(60):
        values = {
            "loss": float(rng.normal(2.0, 0.3)),
            "lr": 3e-4,  # replicated: exact mean, zero std
            "iter": float(step),  # counter: linear extrapolation of the shift
            "tokens": 1e9 + step * 4096.0 + rank,  # mean >> std
            "offset": 1e6 * (step // 20) + float(rng.random()),  # jumps: re-shifted sums
            "sched": 1e-3 * math.cos(step / 7),  # replicated, off the shift every step
        }
        if step == 25 and rank == size - 1:
            values["loss"] = math.nan  # non-finite on one rank only
        if step == 33 and rank == 0:
            del values["lr"]  # a key one rank skips
        if step >= 40:
            values["late"] = float(rank * step)  # a new key: layout agreement
        keys = tuple(k for k in (*base, "late") if k in values)
        xs = [values[k] for k in keys]
        a = small.reduce(keys, list(xs), step)
        b = numpy_path.reduce(keys, np.array(xs), step)
        took_small += a._flat is not None  # the small step finished it itself
        assert a.keys == b.keys, step
        for s in ("mean", "max", "min", "std"):
            assert a.stats[s].tobytes() == b.stats[s].tobytes(), (step, s)
        assert not a.stats["mean"].flags.writeable
        check_against_numpy(comm, a, keys, xs)
    # Most steps really took the small step (the numpy one is the exception).
    assert took_small > 40
    assert 20 in resums  # the jump of "offset": re-shifted sums in the small step
    # "sched" trips the rounding guard every step, yet only the jumps need the list code.
    assert 0 < len(ill_steps) <= 5, ill_steps
    small.close()
    numpy_path.close()
