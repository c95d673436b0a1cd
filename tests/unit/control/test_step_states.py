"""The lanes' fast path (``SteeringBatch(lanes=True)``, see ``control/step_states.py``)
gives the same logits, signals and row states, bit for bit, as the per-row path
(``lanes=False``): over a decode whose rows repeat their text (so transitions and plans
are cached and reused), with greedy and sampling rollback rows, the loop guard banning,
a rollback continuation (start ban, resumed tokens with penalties), ``min_tokens``, a
last step at ``max_tokens``, a prefer-only row, two tokens at once, async placeholders,
an output list that shrinks, rows removed, replaced and moved, and the interned states
compacted mid-run. Plus :class:`.step_states.Lanes` on its own."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from twin_batches import move_in_both

from greyelephant.control.spec import parse_steering
from greyelephant.control.step_states import (
    FLAG_BITS,
    GREEDY,
    NEVER,
    NO_SID,
    WATCH,
    Lanes,
    row_state,
    step_state,
)
from greyelephant.control import steering_batch
from greyelephant.control.steering_batch import RequestInfo, SteeringBatch
from greyelephant.control.step_upload import StepUpload

SIGNAL = 16


def _args(n: int = 3, **update) -> dict:
    spec = parse_steering({"avoid": ["Rome", {"entity": "Coca-Cola", "aliases": ["Coke"]}],
                           "prefer": ["Pepsi"], "no_repeat_ngram": n})
    es = spec.engine_steering(signal=SIGNAL)
    return (es.model_copy(update=update) if update else es).to_extra_args()


def _prefer_only() -> dict:
    return parse_steering({"prefer": ["Pepsi"]}).engine_steering(signal=SIGNAL).to_extra_args()


def _row_fields(batch: SteeringBatch, i: int) -> tuple:
    r = batch.rows[i]
    st = r.state  # (takes a lane row off its lane)
    return (r.consumed, st.avoid, st.prefer, st.pending, st.prefer_done, st.prefer_trying,
            st.prefer_misses, st.violated, r.signalled)


def _gpu_host_path(batch: SteeringBatch) -> SteeringBatch:
    """The batch takes a GPU step's host path on the CPU (see ``test_device_path.py``):
    every mask in the table, the plan's arrays packed into one upload (and, in the test,
    logits numpy cannot read)."""
    batch.sparse_ids = False
    batch._upload = StepUpload("cpu", pack=True)
    return batch


@pytest.mark.parametrize(("max_states", "toggle", "flat", "host"), [
    (1 << 16, False, True, "cpu"), (6, False, True, "cpu"), (1 << 16, True, True, "cpu"),
    (1 << 16, False, False, "cpu"), (1 << 16, False, True, "gpu"), (6, True, True, "gpu"),
    (1 << 16, False, True, "gpu-small-table")])
def test_the_fast_path_equals_the_per_row_path(vocab_index, tokenizer, max_states, toggle,
                                               flat, host, monkeypatch):
    """``max_states=6``: the interned states are compacted again and again. ``toggle``:
    the batch is below ``lane_min_rows`` every other 20 steps (the rows leave their
    lanes, then come back). ``flat=False``: the fast batch applies its plan row by row
    (its pooled rows' entries set one by one). ``host="gpu"``: both batches take a GPU
    step's host path (the pooled rows' masks by table slot, their bias merged into the
    kernels' lists, the check's choices from torch's argmax); ``"gpu-small-table"``:
    with a mask table of 9 slots, whose slots are given to other masks again and again
    (a pooled slot's owner stamp goes stale)."""
    if host != "cpu":
        monkeypatch.setattr(steering_batch, "_numpy_view", lambda t: None)
    text = tokenizer.encode(" I drank a Pepsi in Paris, the cat sat on the mat, then a"
                            " Coca- and a Ro and the cat sat on the mat again.")
    cola, coke = tokenizer.encode("Cola")[0], tokenizer.encode(" Coke")[0]
    greedy = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=400,
                         prompt=[1, *text[:6]])
    short = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=30)
    sampling = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.8, max_tokens=400)
    penalised = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=400,
                            prompt=[1, *text[:6]], presence_penalty=0.5)
    specs = [
        (_args(3), greedy),
        (_args(2), greedy),
        (_args(3, start_ban=(1,), resume=3), greedy),  # a rollback continuation
        (_args(4, min_tokens=12), greedy),
        (_args(3), short),  # its last step comes at max_tokens
        (_args(3), sampling),
        (_prefer_only(), greedy),  # no avoid: never on a lane
        (_args(3, resume=4), penalised),  # resumed-token penalties: never on a lane
        (_args(6), greedy),  # a per-row loop guard: never on a lane
        (None, greedy),
    ]
    budget = {"gpu-small-table": 9 * 4 * ((vocab_index.vocab_size + 31) // 32)}.get(
        host, 256 << 20)
    fast = SteeringBatch(vocab_index, "cpu", compiled=True, lanes=True, lane_min_rows=0,
                         table_budget_bytes=budget)
    fast._lanes.max_states = max_states
    fast.flat_controls = flat
    ref = SteeringBatch(vocab_index, "cpu", compiled=True, lanes=False)
    if host != "cpu":
        fast, ref = _gpu_host_path(fast), _gpu_host_path(ref)
    assert ref._lanes is None
    outs_f = [[] for _ in specs]
    outs_r = [[] for _ in specs]
    for i, (args, info) in enumerate(specs):
        fast.add(i, args, outs_f[i], info)
        ref.add(i, args, outs_r[i], info)
    rng = np.random.default_rng(3)
    n = len(specs)
    for step in range(160):
        if step in (40, 110):  # row 1 gets a new request, row 0 leaves and comes back
            for batch, outs in ((fast, outs_f), (ref, outs_r)):
                outs[1] = []
                batch.add(1, _args(3), outs[1], greedy)
                batch.remove(0)
                outs[0] = []
                batch.add(0, _args(3), outs[0], greedy)
        if toggle:
            fast.lane_min_rows = 0 if step // 20 % 2 == 0 else 100
        if step == 75:  # rows 2 and 3 swap places, row 4 moves onto row 9
            move_in_both(((fast, outs_f), (ref, outs_r)), 2, 3, True)
            move_in_both(((fast, outs_f), (ref, outs_r)), 4, 9, False)
        if step == 90:  # row 5's output shrinks (tokens discarded): replayed from scratch
            for outs in (outs_f, outs_r):
                del outs[5][-3:]
        logits = torch.randn(n, vocab_index.vocab_size,
                             generator=torch.Generator().manual_seed(step))
        logits[:, cola] += 5.0  # after " Coca-" the model heads into the name: signals
        if step % 9 == 4:
            logits[:, coke] += 5.0  # a whole form in one token: anticipated start bans
        lf, lr = fast.apply(logits.clone()), ref.apply(logits.clone())
        assert torch.equal(lf, lr), step
        for i in range(n):
            r = fast.rows.get(i)
            if r is not None and r.signalled:  # the server ends it: a new request there
                args, info = specs[i]
                for batch, outs in ((fast, outs_f), (ref, outs_r)):
                    outs[i] = []
                    batch.add(i, args, outs[i], info)
                continue
            t = text[(step + 2 * i) % len(text)]
            if rng.random() < 0.15 or torch.isneginf(lf[i, t]):
                t = int(lf[i].argmax())
            for outs in (outs_f, outs_r):
                outs[i].append(t)
            if step % 13 == 6:  # two tokens at once
                t2 = text[(step + 2 * i + 1) % len(text)]
                for outs in (outs_f, outs_r):
                    outs[i].append(t2)
            if step % 17 == 8 and i == 3:  # an async placeholder, filled in a step later
                for outs in (outs_f, outs_r):
                    outs[i].append(-1)
            if step % 17 == 9 and i == 3 and outs_f[i][-2] == -1:
                for outs in (outs_f, outs_r):
                    outs[i][-2] = text[0]
    # the fast path served a good share of the lane rows' steps (619 of about 900 with
    # room for every state, 172 of them computed; 330 when a compaction drops the cache
    # every few steps, 296 computed; 285 when the lanes run every other 20 steps, 109;
    # 160 with both, 142)
    assert fast.fast_rows > (100 if max_states < 10 and toggle else
                             200 if max_states < 10 or toggle else 500)
    # nearly all of them planned from the plan pool, anticipated rows included (588 of
    # 619, 327 of 330, 272 of 285, 160 of 160; the GPU's host path: the same, and 583 of
    # 619 with the small table, 34 slots given to other masks)
    assert fast.pooled_rows > fast.fast_rows // 2
    assert fast._lanes.computed > (150 if max_states < 10 and not toggle else
                                   100 if not toggle or max_states < 10 else 50)
    assert fast.signals > 0 and fast.anticipated > 0
    assert (fast.signals, fast.anticipated) == (ref.signals, ref.anticipated)
    for i in fast.rows:
        assert _row_fields(fast, i) == _row_fields(ref, i), i
    if max_states < 10:
        assert fast._lanes.generation > 0
    else:
        assert fast._lanes.generation == 0
    if host == "gpu-small-table":
        assert fast._table.evictions > 20
    if host != "cpu":
        assert fast._upload.copies >= 160 and ref._upload.copies >= 160


@pytest.mark.parametrize("host", ["cpu", "gpu"])
def test_pooled_rows_heading_into_a_form_get_the_rollback_signal(vocab_index, tokenizer,
                                                                 host, monkeypatch):
    """Greedy rows inside a form whose mask bans few tokens are checked from the pool
    (their banned ids as a set): rows reach " Coca" one after another, the first one
    teaching the lanes the step state's plan, the later ones on the fast path, pooled.
    Inside a form the mask bans one token here, a special token, which the logits make
    every row's choice: the rows get the rollback signal there, as on the per-row path."""
    if host != "cpu":
        monkeypatch.setattr(steering_batch, "_numpy_view", lambda t: None)
    text = tokenizer.encode(" the cat sat on the mat and drank a Coca-Cola by the sea")
    special = tokenizer.convert_tokens_to_ids("<empty_output>")
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=400)
    fast = SteeringBatch(vocab_index, "cpu", compiled=True, lanes=True, lane_min_rows=0)
    ref = SteeringBatch(vocab_index, "cpu", compiled=True, lanes=False)
    if host != "cpu":
        fast, ref = _gpu_host_path(fast), _gpu_host_path(ref)
    n = 6
    outs = {id(b): [[] for _ in range(n)] for b in (fast, ref)}
    for b in (fast, ref):
        for i in range(n):
            b.add(i, _args(3), outs[id(b)][i], info)
    pos = [-3 * i for i in range(n)]  # row i starts writing 3 steps after row i - 1
    splits = []
    split = fast._lanes.pool.split
    fast._lanes.pool.split = lambda *a: splits.append(split(*a)) or splits[-1]
    pooled_signals = 0
    for step in range(60):
        splits.clear()
        logits = torch.randn(n, vocab_index.vocab_size,
                             generator=torch.Generator().manual_seed(step))
        logits[:, special] += 8.0  # banned everywhere: a signal inside a form
        lf, lr = fast.apply(logits.clone()), ref.apply(logits.clone())
        assert torch.equal(lf, lr), step
        p = splits[0] if splits else None
        checked = set() if p is None else {
            int(i) for i, inside in zip(p.check_rows, p.check_inside, strict=True) if inside}
        for i in range(n):
            if fast.rows[i].signalled:
                pooled_signals += i in checked
                for b in (fast, ref):
                    outs[id(b)][i] = []
                    b.add(i, _args(3), outs[id(b)][i], info)
                pos[i] = 0
                continue
            t = text[pos[i] % len(text)] if pos[i] >= 0 else text[0]
            if torch.isneginf(lf[i, t]):
                t = int(lf[i].argmax())
            for b in (fast, ref):
                outs[id(b)][i].append(t)
            pos[i] += 1
    assert fast.signals == ref.signals > 10
    assert pooled_signals > fast.signals // 2  # (24 of 26 in a scratch print)
    assert fast.pooled_rows > fast.fast_rows // 2


def test_a_row_read_while_on_its_lane_leaves_it_with_its_state(vocab_index, tokenizer):
    text = tokenizer.encode(" the cat sat on the mat, the cat sat on the mat")
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=400)
    batch = SteeringBatch(vocab_index, "cpu", lanes=True, lane_min_rows=0)
    out: list[int] = []
    batch.add(0, _args(3), out, info)
    for step in range(30):
        batch.apply(torch.zeros(1, vocab_index.vocab_size))
        out.append(text[step % len(text)])
    r = batch.rows[0]
    assert r.on_lane and batch.fast_rows > 0
    lane_sid = batch._lanes.on(r.lane)
    st = r.state
    assert not r.on_lane and batch._lanes.on(r.lane) == NO_SID
    assert step_state(r.kind, st) == batch._lanes._states[lane_sid]
    assert r.consumed == 29  # the last token is advanced at the next step
    batch.apply(torch.zeros(1, vocab_index.vocab_size))
    assert r.on_lane  # back on it after a step on the per-row path


def test_a_row_s_lane_goes_with_the_row(vocab_index):
    batch = SteeringBatch(vocab_index, "cpu", lanes=True, lane_min_rows=0)
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}))
    for i in range(3):
        batch.add(i, _args(3), [], info)
    used = {batch.rows[i].lane for i in range(3)}
    assert len(used) == 3 and min(used) >= 0
    batch.remove(1)
    gc.collect()
    batch.add(5, _args(3), [], info)
    assert batch.rows[5].lane in used  # the freed lane is taken again
    assert len(batch._lanes._free) == 16 - 3  # (the arrays' first 16 lanes, 3 taken)


def _fed_from_rows(batch: SteeringBatch, idx: list[int]) -> tuple:
    """The lanes' inputs of the rows ``idx`` as read from the row objects."""
    rows = [batch.rows[i] for i in idx]
    return ([r.lane for r in rows], [len(r.out) for r in rows],
            [r.out[-1] if r.out else -1 for r in rows])


def test_tracked_lane_inputs_follow_adds_removals_and_moves(vocab_index, monkeypatch):
    """The per-batch-row arrays add/remove/move keep give the rows' lanes, output
    lengths and newest tokens as the row objects do: after removals, replacements, moves
    and swaps, rows that are not steered or not on lanes, an empty output, batch rows past
    the arrays' first size, and rows not numbered from 0; none once ``rows`` was
    replaced from outside (as runner V2's adapter does)."""
    monkeypatch.setattr(steering_batch, "TRACKED_ROWS", 4)
    batch = SteeringBatch(vocab_index, "cpu", lanes=True, lane_min_rows=0)
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}))
    rng = np.random.default_rng(1)
    outs: dict[int, list[int]] = {}

    def add(i: int, args: dict | None) -> None:
        outs[i] = [int(t) for t in rng.integers(0, 1000, size=int(rng.integers(0, 5)))]
        batch.add(i, args, outs[i], info)

    for i in range(6):
        add(i, _args(3) if i != 2 else _prefer_only())  # row 2: steered, on no lane
    add(6, None)  # not steered: no row
    steps = [lambda: batch.remove(1), lambda: add(1, _args(4)),
             lambda: batch.move(3, 4, True), lambda: batch.move(5, 9, False),
             lambda: batch.move(0, 3, False), lambda: add(0, _args(2)),
             lambda: batch.remove(9)]
    checked, forms = 0, set()
    for change in [lambda: None, *steps]:
        change()
        for out in outs.values():
            out.append(int(rng.integers(0, 1000)))
        idx = sorted(batch.rows)
        fed = batch._tracked_fed(idx)
        assert ([int(x) for x in fed.lanes], fed.lengths.tolist(), fed.last.tolist()) \
            == _fed_from_rows(batch, idx)
        checked += len(idx)
        forms.add(idx == list(range(len(idx))))  # (sliced, or gathered past a gap)
    assert checked > 20 and forms == {True, False}
    assert batch._row_outs[5] is None and len(batch._row_outs) >= 10
    assert {batch.rows[i].lane for i in batch.rows} != {-1}
    batch.rows = dict(batch.rows)
    assert batch._tracked_fed(sorted(batch.rows)) is None


def test_lanes_advance_only_known_plain_steps():
    lanes = Lanes()
    a = lanes.open(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1, watch=True,
                   greedy=True)
    b = lanes.open(plain_from=0, plain_below=3, min_stop=0, guard=7, watch=False,
                   greedy=False)
    s0, s1 = (1, 0, b"", 0, False, False, 0), (1, 4, b"", 0, False, False, 0)
    x = lanes.put(a, s0, 0)
    y = lanes.put(b, s0, 1)
    assert x == y and lanes.states == 1
    to = lanes.put(lanes.open(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1,
                              watch=False, greedy=False), s1, 0)
    lanes.learn(x, 42, to)
    at = np.array([a, b, -1], dtype=np.int32)
    # the transition is known, but s1 has no plan yet: nothing moves
    codes, n, pushes = lanes.advance(at, np.array([1, 2, 5]), np.array([42, 42, 42]))
    assert n == 0 and codes.tolist() == [NO_SID] * 3 and pushes.shape == (0, 3)
    lanes.set_plan(to, "plan")
    # a: one new token, plain -> moves; b: its 2nd token is its last plain one (< 3)
    codes, n, pushes = lanes.advance(at, np.array([1, 2, 5]), np.array([42, 42, 42]))
    assert n == 2 and codes.tolist() == [(to << FLAG_BITS) | WATCH | GREEDY,
                                         to << FLAG_BITS, NO_SID]
    assert pushes.tolist() == [[1, 7, 42]]  # b's loop guard (handle 7) takes token 42
    assert lanes.consumed[a] == 1 and lanes.consumed[b] == 2
    # b's next step is its last: off the fast path; a: unknown token, two tokens at once
    lanes.learn(to, 42, to)
    codes, n, _ = lanes.advance(at[:2], np.array([3, 3]), np.array([43, 42]))
    assert n == 0 and lanes.on(a) == to and lanes.consumed[a] == 1
    assert lanes.take(a) == (s1, 1) and lanes.take(a) is None
    assert row_state(s1, 9).avoid == 4 and row_state(s1, 9).n_tokens == 9
    lanes.forget_plans()
    _, n, _ = lanes.advance(np.array([b], dtype=np.int32), np.array([3]), np.array([42]))
    assert n == 0


def test_lanes_compact_to_the_live_states():
    lanes = Lanes(max_states=4)
    open_lane = dict(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1, watch=False,
                     greedy=False)
    keep = lanes.open(**open_lane)
    other = lanes.open(**open_lane)
    states = [(1, q, b"", 0, False, False, 0) for q in range(6)]
    lanes.put(keep, states[0], 5)
    for st in states[1:4]:
        lanes.put(other, st, 0)
    assert lanes.states == 4 and lanes.generation == 0
    lanes.learn(0, 3, 1)
    lanes.take(other)  # (as the batch does: a row leaves its lane before it is put back)
    lanes.put(other, states[4], 0)  # past max_states: only keep's and other's states stay
    assert lanes.generation == 1 and lanes.states == 2
    assert lanes.take(keep) == (states[0], 5)
    assert lanes.take(other) == (states[4], 0)
    assert lanes._used == 0  # the transitions start over


def test_transitions_survive_growth_and_start_over_at_their_bound(monkeypatch):
    from greyelephant.control import step_states

    lanes = Lanes()
    lane = lanes.open(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1, watch=False,
                      greedy=False)
    s = lanes.put(lane, (1, 0, b"", 0, False, False, 0), 0)
    lanes.set_plan(s, "plan")
    for t in range(3000):  # past the first sizes: the table is rehashed (compiled)
        lanes.learn(s, t, s)
    assert lanes._used == 3000 and lanes._table.shape[0] >= 6000
    at = np.array([lane], dtype=np.int32)
    for n, t in enumerate((0, 1234, 2999)):  # every learned transition is still found
        _, moved, _ = lanes.advance(at, np.array([n + 1]), np.array([t]))
        assert moved == 1
    monkeypatch.setattr(step_states, "MAX_TRANSITIONS", 3000)
    lanes.learn(s, 3000, s)  # at the bound: they start over, with this one
    assert lanes._used == 1
    _, moved, _ = lanes.advance(at, np.array([4]), np.array([5]))
    assert moved == 0
    _, moved, _ = lanes.advance(at, np.array([4]), np.array([3000]))
    assert moved == 1


def test_lanes_compute_transitions_from_the_spec_s_automata(monkeypatch):
    """A transition never learned is computed from the spec's automata (as arrays, taught
    on the way), equal to the Python path's; with the specs' bound reached, a forgotten
    spec's states fall back to the Python path until they are put again."""
    from greyelephant.control import step_states
    from greyelephant.control.ban_automaton import CompiledSteering
    from greyelephant.control.vocab_index import VocabIndex

    index = VocabIndex.from_token_bytes([b"a", b" ab", b" cdef", b" x", b"ef", b" cde"])
    spec = CompiledSteering(index, ["ab"], ["cdef"])
    open_lane = dict(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1, watch=False,
                     greedy=False)
    lanes = Lanes()
    row = spec.new_row()
    kind = 1 << 20  # (row kinds grow without bound; the state keys hold a number for each)
    path = [step_state(kind, row)]
    words = (3, 5, 3, 5, 3)  # " x", " cde" (boosted), " x" (abandoned), twice: spent
    for t in words:
        spec.advance(row, t)
        path.append(step_state(kind, row))
    assert path[2][5] and path[3][6] == 1 and path[5][4:] == (True, False, 2)
    sids = [lanes.put(lanes.open(**open_lane), st, 0, spec) for st in path]
    for s in sids:
        lanes.set_plan(s, "plan")
    lane = lanes.open(**open_lane)
    lanes.put(lane, path[0], 0, spec)
    at = np.array([lane], dtype=np.int32)
    for n, t in enumerate(words):
        codes, moved, _ = lanes.advance(at, np.array([n + 1]), np.array([t]))
        assert moved == 1 and codes[0] >> FLAG_BITS == sids[n + 1]
    assert lanes.computed == 5 and lanes._used == 5  # computed, then cached
    lanes.take(lane)
    lanes.put(lane, path[0], 0, spec)
    _, moved, _ = lanes.advance(at, np.array([1]), np.array([3]))
    assert moved == 1 and lanes.computed == 5  # the cached transition
    # a second spec past the bound: the first one's arrays are forgotten
    monkeypatch.setattr(step_states, "MAX_SPECS", 1)
    other = CompiledSteering(index, ["cd"])
    lanes.put(lanes.open(**open_lane), (kind + 1, other.avoid.start, b"", other.prefer.start,
                                        True, False, 0), 0, other)
    codes, moved, _ = lanes.advance(at, np.array([2]), np.array([0]))  # "a": never seen
    assert moved == 0 and codes[0] == NO_SID
    lanes.put(lane, path[1], 1, spec)  # put again: the spec's arrays come back
    codes, moved, _ = lanes.advance(at, np.array([2]), np.array([0]))
    assert moved == 1 and lanes.computed == 6 and codes[0] >> FLAG_BITS == sids[1]


def test_past_the_specs_bounds_only_the_least_recently_put_spec_s_arrays_go(monkeypatch):
    """At the specs' byte budget (or count bound) one spec's arrays go, the least recently
    put one's: the others keep theirs (their transitions are still computed), and the
    dropped one's states fall back to the Python path until it is put again."""
    from greyelephant.control import step_states
    from greyelephant.control.ban_automaton import CompiledSteering
    from greyelephant.control.vocab_index import VocabIndex

    index = VocabIndex.from_token_bytes([b"a", b" ab", b" cdef", b" x", b"ef", b" cde"])
    specs = [CompiledSteering(index, [name]) for name in ("ab", "cd", "ef")]
    open_lane = dict(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1, watch=False,
                     greedy=False)
    lanes = Lanes()
    lane_of = []
    for n, spec in enumerate(specs[:2]):
        row = spec.new_row()
        start = step_state(n + 1, row)
        spec.advance(row, 3)  # " x": where the row goes, its plan known
        lanes.set_plan(lanes.put(lanes.open(**open_lane), step_state(n + 1, row), 1, spec),
                       "plan")
        lane = lanes.open(**open_lane)
        lanes.set_plan(lanes.put(lane, start, 0, spec), "plan")
        lane_of.append(lane)
    size = max(a.nbytes for a in lanes._specs)
    monkeypatch.setattr(step_states, "SPEC_ARRAYS_BUDGET_BYTES", 2 * size)
    lanes.put(lane_of[0], lanes._states[lanes.on(lane_of[0])], 0, specs[0])  # used again
    third = lanes.open(**open_lane)
    lanes.put(third, step_state(3, specs[2].new_row()), 0, specs[2])  # past the budget
    assert set(lanes._spec_slots) == {specs[0].uid, specs[2].uid}
    assert lanes._spec_bytes <= 2 * size and len(lanes._specs) == 2  # the slot reused
    # the kept spec's row computes its transition; the dropped spec's row cannot
    for lane, moved_want in ((lane_of[0], 1), (lane_of[1], 0)):
        before = lanes.computed
        _, moved, _ = lanes.advance(np.array([lane], dtype=np.int32), np.array([1]),
                                    np.array([3]))  # " x"
        assert moved == moved_want and lanes.computed - before == moved_want
    lanes.put(lane_of[1], step_state(2, specs[1].new_row()), 0, specs[1])  # put again
    _, moved, _ = lanes.advance(np.array([lane_of[1]], dtype=np.int32), np.array([1]),
                                np.array([3]))
    assert moved == 1
    monkeypatch.setattr(step_states, "MAX_SPECS", 1)  # the count bound: one spec left
    lanes.put(third, lanes._states[lanes.on(third)], 1, specs[2])
    lanes.put(lane_of[0], step_state(1, specs[0].new_row()), 0, specs[0])
    assert list(lanes._spec_slots) == [specs[0].uid]


def test_rows_of_several_specs_compute_their_transitions_in_one_step():
    """Rows of different specs left unseen in one step are computed together (one
    compiled call over every spec's arrays), each from its own spec's automata."""
    from greyelephant.control.ban_automaton import CompiledSteering
    from greyelephant.control.vocab_index import VocabIndex

    index = VocabIndex.from_token_bytes([b"a", b" ab", b" cdef", b" x", b"ef", b" cde"])
    specs = [CompiledSteering(index, [name], ["cdef"]) for name in ("ab", "cd", "ef")]
    open_lane = dict(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1, watch=False,
                     greedy=False)
    lanes = Lanes()
    at, want = [], []
    for n, spec in enumerate(specs):
        row = spec.new_row()
        start = step_state(n + 1, row)
        spec.advance(row, 5)  # " cde": a boosted start of the preferred form
        lanes.set_plan(lanes.put(lanes.open(**open_lane), step_state(n + 1, row), 1, spec),
                       "plan")
        want.append(lanes._ids[step_state(n + 1, row)])
        lane = lanes.open(**open_lane)
        lanes.set_plan(lanes.put(lane, start, 0, spec), "plan")
        at.append(lane)
    codes, moved, _ = lanes.advance(np.array(at, dtype=np.int32), np.ones(3, dtype=np.int64),
                                    np.full(3, 5, dtype=np.int64))
    assert moved == 3 and lanes.computed == 3
    assert [c >> FLAG_BITS for c in codes.tolist()] == want
