"""Warm-up is nobody's trial (issue 21): what a process pays once per shape (on a GPU: the CUDA
context, cuDNN's autotuning of each new shape, first allocations) is paid by a measured warm-up
before the trial's first window, on the sweep's ledger, so the order of a sweep's trials no
longer changes their energy; and the warm-up changes nothing of the trial's results.

The meter here charges by work, never by time: each forward pass of a layer costs by the size of
its input, and a layer kind's first pass on an input shape in the process costs much more, as a
GPU's does. No test waits for anything to happen."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from trials_in_memory import memory_data, trial

from greenai.config import ModelName, TrainConfig
from greenai.energy.meters import Measurement, Source
from greenai.training import devices, models, warmup
from greenai.training.loop import fit
from greenai.training.optim import make_optimizer, settings_from
from greenai.trial.life import WARMUP, Piece
from greenai.trial.outcome import Finished
from greenai.trial.runner import WARMED_EARLIER, run_alone

PASS_J = 1e-5  # per input element of a layer's forward pass
FIRST_J = 2.0  # more for a layer kind's first pass on an input shape in the process


class ShapeMeter:
    """A GPU's meter as the issue describes it, paced by work: each forward pass of any module is
    charged to the windows open at the time; one of a (module kind, input shape) the process has
    not run before costs FIRST_J more. Passes outside every window (an unmeasured warm-up) are
    nobody's, but the shape is then known."""

    source = Source.measured
    description = "fake: charged by work, new shapes dearer"
    components = "gpu"

    def __init__(self) -> None:
        self.seen: set[tuple[str, tuple[int, ...]]] = set()
        self.open: dict[str, float] = {}

    def _forward(self, module: torch.nn.Module, inputs: tuple, output: object) -> None:
        if not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        shape = (type(module).__name__, tuple(inputs[0].shape))
        joules = inputs[0].numel() * PASS_J + (0.0 if shape in self.seen else FIRST_J)
        self.seen.add(shape)
        for name in self.open:
            self.open[name] += joules

    @contextmanager
    def installed(self):
        handle = torch.nn.modules.module.register_module_forward_hook(self._forward)
        try:
            yield self
        finally:
            handle.remove()

    def begin(self, name: str) -> None:
        self.open[name] = 0.0

    def end(self, name: str) -> Measurement:
        return Measurement(0.0, self.open.pop(name), None, Source.measured)

    def cancel(self, name: str) -> None:
        self.open.pop(name, None)


def simplecnn(conv: int) -> models.ArchitectureSpec:
    return models.ArchitectureSpec(ModelName.simplecnn, (1, 28, 28), conv_layers=conv, linear_layers=2)


@pytest.fixture
def fresh_process():
    """Each order starts as a new process would: nothing warmed yet."""
    warmup.WARMED.clear()
    yield
    warmup.WARMED.clear()


def energies(order: list[int], warmup_steps: int, data) -> dict[int, float]:
    """Each model's energy_j, the models trained in `order` in one (fresh) process."""
    warmup.WARMED.clear()
    found: dict[int, float] = {}
    with ShapeMeter().installed() as meter:
        for conv in order:
            run = trial(meter, data, spec=simplecnn(conv), warmup_steps=warmup_steps)
            assert isinstance(run_alone(run), Finished)
            found[conv] = run.record.figures.metrics()["energy_j"]
    return found


def test_with_the_warm_up_the_order_of_the_trials_leaves_each_models_energy_alone(fresh_process):
    data = memory_data()
    forward, backward = energies([1, 2, 3], 2, data), energies([3, 2, 1], 2, data)
    for conv in (1, 2, 3):
        assert forward[conv] == pytest.approx(backward[conv], rel=0.05), (conv, forward, backward)


def test_without_it_the_first_trial_of_a_shape_pays_for_it(fresh_process):
    data = memory_data()
    forward, backward = energies([1, 2, 3], 0, data), energies([3, 2, 1], 0, data)
    apart = {conv: abs(forward[conv] - backward[conv]) / min(forward[conv], backward[conv]) for conv in (1, 2, 3)}
    assert max(apart.values()) > 0.05, (forward, backward)
    # Each model trained first pays most: conv 1 in the first order, conv 3 in the second.
    assert forward[1] > backward[1] and backward[3] > forward[3]


def test_the_warm_up_is_measured_apart_once_per_shape_and_the_record_says_so(fresh_process):
    data = memory_data()
    with ShapeMeter().installed() as meter:
        runs = [trial(meter, data, spec=simplecnn(conv), seed=seed) for conv, seed in ((2, 1), (2, 2), (3, 1))]
        for run in runs:
            run.setup.startup = object()  # a trial with pieces on the sweep's ledger
            assert isinstance(run_alone(run), Finished)
    first, again, other = runs
    assert first.record.warmed[0] == "done" and isinstance(first.setup.warmup, Piece)
    assert first.setup.warmup.name == WARMUP
    warm_j = first.setup.warmup.taken.gpu_j
    assert first.record.warmed[1].gpu_j == warm_j and warm_j > FIRST_J  # it paid for the new shapes
    assert again.record.warmed == (WARMED_EARLIER, None) and getattr(again.setup, "warmup", None) is None
    assert other.record.warmed[0] == "done", "a new architecture is warmed again"
    # The trials' own figures hold none of it: the same model's trials spend the same.
    assert first.record.figures.metrics()["energy_j"] == pytest.approx(again.record.figures.metrics()["energy_j"])


def test_warm_up_steps_zero_turns_it_off(fresh_process):
    run = trial(ShapeMeter(), memory_data(), warmup_steps=0)
    run_alone(run)
    assert run.record.warmed == ("off", None) and not warmup.WARMED


def test_a_trial_after_its_warm_up_has_the_weights_it_would_have_had(fresh_process):
    """Bit for bit under deterministic=true: the model, optimiser and RNG streams are untouched."""
    data = memory_data()
    config = TrainConfig()
    spec = simplecnn(2)

    def trained(warm: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(99)  # the global stream the warm-up must give back as it found it
        if warm:
            before = torch.get_rng_state()
            warmup.warm_up(config, spec, data, steps=3)
            assert torch.equal(torch.get_rng_state(), before)
        torch.manual_seed(7)
        model = models.build(spec)
        optimizer = make_optimizer(model, settings_from(config))
        fit(model, optimizer, data, epochs=2, batch_size=40, seed=7, meter=ShapeMeter())
        return copy.deepcopy(model.state_dict()) | {f"adam.{k}": v for k, v in _adam(optimizer).items()}

    devices.set_deterministic(True)
    try:
        cold, warm = trained(False), trained(True)
    finally:
        devices.set_deterministic(False)
    assert cold.keys() == warm.keys()
    assert all(torch.equal(cold[k], warm[k]) for k in cold)


def _adam(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{name}": value.clone()
        for i, state in enumerate(optimizer.state.values())
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
    }


def test_a_trials_figures_are_the_same_with_and_without_its_warm_up(fresh_process):
    data = memory_data()
    devices.set_deterministic(True)
    try:
        runs = []
        for steps in (0, 2):
            warmup.WARMED.clear()
            run = trial(ShapeMeter(), data, spec=simplecnn(2), epochs=2, repeats=2, warmup_steps=steps)
            torch.manual_seed(5)  # a global stream the warm-up must not move
            assert isinstance(run_alone(run), Finished)
            runs.append((run, torch.get_rng_state()))
    finally:
        devices.set_deterministic(False)
    (cold, cold_rng), (warm, warm_rng) = runs
    assert warm.record.warmed[0] == "done" and cold.record.warmed[0] == "off"
    losses = [[(e.train_loss, e.test_loss, e.test_accuracy) for e in r.record.figures.epochs] for r in (cold, warm)]
    assert losses[0] == losses[1]
    assert cold.record.figures.accuracies == warm.record.figures.accuracies
    assert torch.equal(cold_rng, warm_rng)


def test_a_fused_group_is_warmed_on_its_own_shapes(fresh_process):
    data = memory_data()
    config = TrainConfig()
    setup = SimpleNamespace(config=config, spec=simplecnn(1), dataset=data, meter=ShapeMeter(), name="g")
    records = [SimpleNamespace(warmup=lambda state, taken=None, seen=[]: seen.append(state))]
    from greenai.trial.runner import warm

    before = torch.get_rng_state()
    warm(setup, records, members=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert warmup.shapes_of(config, setup.spec, data, 3) in warmup.WARMED
    assert warmup.shapes_of(config, setup.spec, data, 1) not in warmup.WARMED, "a group's shapes are its own"
