"""Fused trials: K trainings of one architecture as ONE grouped model, so a sweep keeps a GPU busy.

The paper's models are tiny: one trial's step leaves a modern GPU mostly idle, launching small
kernels. Fusion trains K members (trials or repeats) of the same architecture as one module whose
layers are K-fold wider and grouped, while each member keeps its own seed, initial weights, batch
order and Adam hyperparameters, and trains exactly as it would alone (in float64 on the CPU its
parameters and losses equal the unfused path's to rounding; tests/e2e/test_fusion.py holds that
contract).

How the members stay apart:

- The members' input batches are stacked on the channel axis, (B, K*C, H, W); convolutions run
  with `groups=K`; BatchNorm normalises the K*C channels one by one, so each member's channels
  keep their own batch statistics and running averages; activations act element by element and
  pooling (max, average, adaptive) channel by channel anyway (FUSABLE lists the layer kinds).
  Flatten turns (B, K*C, h, w) into (K, B, C*h*w) and the linear layers are batched matrix
  products (`torch.baddbmm`); the logits come out as (K, B, classes).
- The loss is the sum over members of each member's mean cross-entropy, so each member's
  gradient is exactly its gradient alone (the other members' terms do not depend on its weights).
- Member k's initial weights are those of `torch.manual_seed(seed_k); models.build(spec)`, the
  unfused path's; its batches come from its own `torch.Generator().manual_seed(seed_k)`, one
  randperm per epoch as in `DeviceData.train_batches`, and all members' batches are gathered with
  one index op per step.

Design of the optimiser (why not torch.optim.Adam with one param group per member): torch's Adam
steps its param groups one after another, so K members cost K optimizer-kernel calls and K times
its Python bookkeeping per step, and per-member leaf tensors would have to be concatenated into
the grouped layers in every forward pass (and the gradients split back): per-step work that grows
with K, on a GPU where one member's whole step is ~2 ms of launch-bound work. Here instead every
trainable tensor of every member lives in ONE flat (K, n) buffer, member-major (the model's
parameters are views into it), and `MemberAdam` updates that buffer with torch's Adam arithmetic
(L2 weight decay added to the gradient, as torch.optim.Adam does) in about twenty tensor ops,
with each member's lr, beta1, beta2, eps and weight decay as a (K, 1) column: the number of
kernels per step depends neither on K nor on the number of layers. `MemberAdam.applied` reads
each member's values back from those columns, the very tensors the update uses.

Dropping a member (pruned, diverged) at an epoch boundary keeps the survivors' rows of every
tensor (weights, Adam moments, BatchNorm running statistics): no operation mixes members, so the
survivors train on as before, to rounding (a group of another size rounds differently the
gradient of a conv bias before BatchNorm, which is mathematically zero).

Energy: one meter window per epoch's training and one per evaluation measure the whole group;
members do equal work, so each active member gets an equal share of the window's joules and
seconds (`share`), labelled `fused`. Sharing the seconds too keeps a member's net energy (gross
minus idle power x seconds) its share of the group's.

A FusedModel is built on its device and dtype by `fuse` (its parameters are views into one
buffer, which `.to()` or `.double()` would break), and it refuses those calls.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from greenai.config import TrainConfig
from greenai.energy.meters import Meter, window
from greenai.errors import ConfigError
from greenai.training import models
from greenai.training.data import DeviceData
from greenai.training.loop import EVAL_BATCH, EpochHook, EpochResult, Hyperparameters, RunState, TrainingRun

# Member-images per no-grad evaluation chunk: every member evaluates the same test images, so a
# chunk of EVAL_MEMBER_IMAGES // K images keeps the work per chunk about constant as K grows.
EVAL_MEMBER_IMAGES = 4 * EVAL_BATCH

# Element by element: the same on a member's own tensor as on the group's, before or after Flatten.
ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Identity,
)
# Channel by channel, on (B, C, H, W): the group's K*C channels are each member's C, side by side.
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
FUSABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Flatten, nn.Linear, *POOLS, *ELEMENTWISE)
BEFORE_FLATTEN = (nn.Conv2d, nn.BatchNorm2d, *POOLS)  # work on (B, C, H, W) only


# ---------------------------------------------------------------- which layers can be grouped


def flat_layers(model: nn.Module) -> list[nn.Module]:
    """The layers a model applies, in order: nn.Sequential containers opened, nested ones too,
    and a user's subclass of it where it keeps Sequential's forward. Anything else is one layer."""
    if isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward:
        return [layer for child in model for layer in flat_layers(child)]
    return [model]


def _refuse(index: int, layer: nn.Module, why: str) -> ConfigError:
    return ConfigError("fuse", "true", f"cannot group layer {index} ({type(layer).__name__}): {why}")


def _check_layer(index: int, layer: nn.Module, flattened: bool) -> None:
    if type(layer) not in FUSABLE:
        names = ", ".join(kind.__name__ for kind in FUSABLE)
        raise _refuse(index, layer, f"fusion groups only {names} layers")
    if flattened and isinstance(layer, BEFORE_FLATTEN):
        raise _refuse(index, layer, "it follows Flatten")
    if not flattened and isinstance(layer, nn.Linear):
        raise _refuse(index, layer, "a Linear layer must follow Flatten")
    if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.bias is None or layer.padding_mode != "zeros"):
        raise _refuse(index, layer, "only ungrouped convolutions with a bias and zero padding are fused")
    if isinstance(layer, nn.BatchNorm2d) and not (layer.affine and layer.track_running_stats and layer.momentum):
        raise _refuse(index, layer, "only affine BatchNorm2d with running statistics and a momentum is fused")
    if isinstance(layer, nn.Linear) and layer.bias is None:
        raise _refuse(index, layer, "only Linear layers with a bias are fused")
    if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
        raise _refuse(index, layer, "only Flatten() over all but the batch axis is fused")


def check_fusable(model: nn.Module) -> None:
    """Refuse, with one line naming the key `fuse`, a model whose layers the fused module cannot
    group: any model made only of FUSABLE layers in nn.Sequential containers fuses, the paper's
    and a user's alike."""
    layers = flat_layers(model)
    if layers == [model]:
        raise ConfigError(
            "fuse", "true", f"cannot group a {type(model).__name__}: fusion takes nn.Sequential layers, not a forward"
        )
    if len({id(layer) for layer in layers}) != len(layers):
        raise ConfigError("fuse", "true", "cannot group a model that applies one layer twice")
    flattened = False
    for index, layer in enumerate(layers):
        _check_layer(index, layer, flattened)
        flattened = flattened or isinstance(layer, nn.Flatten)
    if not flattened:
        raise ConfigError("fuse", "true", "cannot group a model without a Flatten before its linear layers")


def why_not_fusable(model: nn.Module) -> str | None:
    """Why `model` cannot be fused, in a phrase (None: it can)."""
    try:
        check_fusable(model)
    except ConfigError as refused:
        return str(refused).split(": ", 1)[1]
    return None


def _check_same_architecture(nets: Sequence[nn.Module]) -> None:
    """Members must agree layer by layer; grouping configs by `fusion_key` guarantees it."""

    def shapes(net: nn.Module) -> list[tuple[type, tuple[torch.Size, ...]]]:
        return [(type(layer), tuple(t.shape for t in layer.state_dict().values())) for layer in flat_layers(net)]

    first = shapes(nets[0])
    for net in nets[1:]:
        if shapes(net) != first:
            raise ValueError("fusion needs members of one architecture (same layers and shapes)")


# ---------------------------------------------------------------- the fused layers


class _Stacked(nn.Module):
    """A layer of K members whose tensors are stacked on a leading member axis."""

    PARAMETERS: tuple[str, ...] = ()
    BUFFERS: tuple[str, ...] = ()

    def __init__(self, layers: Sequence[nn.Module], device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()

        def stacked(name: str) -> torch.Tensor:
            tensor = torch.stack([getattr(layer, name).detach() for layer in layers])
            return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)

        for name in self.PARAMETERS:
            self.register_parameter(name, nn.Parameter(stacked(name)))
        for name in self.BUFFERS:
            self.register_buffer(name, stacked(name))

    @torch.no_grad()
    def export(self, layer: nn.Module, position: int) -> None:
        """Copy the member at `position` into `layer`, an unfused layer of the same kind."""
        for name in (*self.PARAMETERS, *self.BUFFERS):
            getattr(layer, name).copy_(getattr(self, name)[position])

    def keep_buffers(self, positions: torch.Tensor) -> None:
        for name in self.BUFFERS:
            setattr(self, name, getattr(self, name).index_select(0, positions))


class _GroupedConv2d(_Stacked):
    PARAMETERS = ("weight", "bias")

    def __init__(self, convs: Sequence[nn.Conv2d], device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(convs, device, dtype)
        self.stride, self.padding, self.dilation = convs[0].stride, convs[0].padding, convs[0].dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[0]
        weight, bias = self.weight.flatten(0, 1), self.bias.flatten()
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups=k)


class _GroupedBatchNorm2d(_Stacked):
    PARAMETERS = ("weight", "bias")
    BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, norms: Sequence[nn.BatchNorm2d], device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(norms, device, dtype)
        self.eps, self.momentum = norms[0].eps, norms[0].momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)  # as nn.BatchNorm2d counts, so an exported member matches
        # The (K, C) buffers are contiguous, so their flattened views are updated in place.
        return F.batch_norm(
            x,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.flatten(),
            self.bias.flatten(),
            self.training,
            self.momentum,
            self.eps,
        )


class _MemberFlatten(nn.Module):
    """(B, K*C, h, w) -> (K, B, C*h*w): each member's features in nn.Flatten's order."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.members, -1).transpose(0, 1)


class _GroupedLinear(_Stacked):
    PARAMETERS = ("weight", "bias")  # (K, out, in) and (K, out), nn.Linear's layout per member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


def _fused_layer(layers: Sequence[nn.Module], device: torch.device, dtype: torch.dtype) -> nn.Module:
    first = layers[0]
    if isinstance(first, nn.Conv2d):
        return _GroupedConv2d(layers, device, dtype)  # type: ignore[arg-type]
    if isinstance(first, nn.BatchNorm2d):
        return _GroupedBatchNorm2d(layers, device, dtype)  # type: ignore[arg-type]
    if isinstance(first, nn.Linear):
        return _GroupedLinear(layers, device, dtype)
    if isinstance(first, nn.Flatten):
        return _MemberFlatten(len(layers))
    return copy.deepcopy(first)  # activations, pools: per element or per channel already, no weights


class FusedModel(nn.Module):
    """K members of one architecture as one module: input (B, K*C, H, W), logits (K, B, classes).

    Every member's trainable tensors live in one flat (K, n) buffer, `flat`, member-major; the
    layers' parameters are views into it, so an optimiser can update all members at once.
    """

    def __init__(self, nets: Sequence[nn.Module], device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        for net in nets:
            check_fusable(net)
        _check_same_architecture(nets)
        self._template = (copy.deepcopy(nets[0]),)  # a tuple, so nn.Module does not register it
        columns = zip(*(flat_layers(net) for net in nets), strict=True)
        self.layers = nn.ModuleList(_fused_layer(column, device, dtype) for column in columns)
        self.flat = torch.cat([p.detach().reshape(len(nets), -1) for p in self.parameters()], dim=1)
        self._bind()

    @property
    def members(self) -> int:
        return self.flat.shape[0]

    def _bind(self) -> None:
        """Point every parameter at its columns of `flat` (after building, and after a drop)."""
        offset, k = 0, self.members
        for p in self.parameters():
            size = p[0].numel()
            p.data = self.flat[:, offset : offset + size].view(k, *p.shape[1:])
            p.grad = None
            offset += size

    def flat_grad(self) -> torch.Tensor:
        """All members' gradients as one (K, n) tensor laid out like `flat`."""
        k = self.members
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.parameters()]
        return torch.cat([g.reshape(k, -1) for g in grads], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def member(self, position: int) -> nn.Module:
        """A stand-alone copy of the member at `position`: its weights and BatchNorm statistics."""
        net = copy.deepcopy(self._template[0]).to(device=self.flat.device, dtype=self.flat.dtype)
        for unfused, fused in zip(flat_layers(net), self.layers, strict=True):
            if isinstance(fused, _Stacked):
                fused.export(unfused, position)
        return net.train(self.training)

    def keep(self, positions: Sequence[int]) -> None:
        """Keep only the members at `positions` (in that order), with their weights and statistics."""
        index = torch.tensor(list(positions), dtype=torch.long, device=self.flat.device)
        self.flat = self.flat.index_select(0, index)
        self._bind()
        for layer in self.layers:
            if isinstance(layer, _Stacked):
                layer.keep_buffers(index)
            elif isinstance(layer, _MemberFlatten):
                layer.members = len(index)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        raise RuntimeError("a FusedModel is built on its device and dtype by fuse(); .to() would detach its views")


def fuse(
    nets: Sequence[nn.Module], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> FusedModel:
    """Group `nets` (members of one architecture, in member order) into one FusedModel on `device`."""
    if not nets:
        raise ValueError("fusion needs at least one member")
    return FusedModel(nets, torch.device(device), dtype)


# ---------------------------------------------------------------- the optimiser


class MemberAdam:
    """torch.optim.Adam's update for every member of a FusedModel at once, each member with its own
    lr, betas, eps and weight decay (a (K, 1) column each, float64 as torch's Python scalars are)."""

    def __init__(self, model: FusedModel, hyperparameters: Sequence[Hyperparameters]) -> None:
        if len(hyperparameters) != model.members:
            raise ValueError(f"{len(hyperparameters)} sets of hyperparameters for {model.members} members")
        self.model = model
        device = model.flat.device

        def column(name: str) -> torch.Tensor:
            values = [getattr(hp, name) for hp in hyperparameters]
            return torch.tensor(values, dtype=torch.float64, device=device).unsqueeze(1)

        self.lr, self.beta1, self.beta2 = column("lr"), column("beta1"), column("beta2")
        self.eps, self.weight_decay = column("eps"), column("weight_decay")
        self.steps = 0
        self.exp_avg = torch.zeros_like(model.flat)
        self.exp_avg_sq = torch.zeros_like(model.flat)
        self._cast_columns()

    def _cast_columns(self) -> None:
        """The constant factors in the parameters' dtype, computed once (and again after a drop)."""
        dtype = self.model.flat.dtype
        self._weight_decay = self.weight_decay.to(dtype)
        self._one_minus_beta1 = (1 - self.beta1).to(dtype)
        self._beta2 = self.beta2.to(dtype)
        self._one_minus_beta2 = (1 - self.beta2).to(dtype)
        self._eps = self.eps.to(dtype)

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step, in the order of operations of torch's single-tensor Adam."""
        flat, dtype = self.model.flat, self.model.flat.dtype
        grad = self.model.flat_grad()
        self.steps += 1
        grad.addcmul_(flat, self._weight_decay)  # L2 decay, as torch.optim.Adam (not AdamW); 0 adds 0
        self.exp_avg.lerp_(grad, self._one_minus_beta1)
        self.exp_avg_sq.mul_(self._beta2).addcmul_(grad * self._one_minus_beta2, grad)
        step_size = (self.lr / (1 - self.beta1**self.steps)).to(dtype)
        bias_correction2_sqrt = (1 - self.beta2**self.steps).sqrt().to(dtype)
        denom = self.exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(self._eps)
        flat.addcdiv_(self.exp_avg * -step_size, denom)

    def applied(self, position: int) -> Hyperparameters:
        """What the update really uses for the member at `position`, read back from its columns."""
        values = (getattr(self, name)[position].item() for name in ("lr", "beta1", "beta2", "eps", "weight_decay"))
        return Hyperparameters(*values)

    def keep(self, positions: Sequence[int]) -> None:
        """Keep the Adam state and hyperparameters of the members at `positions` only."""
        index = torch.tensor(list(positions), dtype=torch.long, device=self.exp_avg.device)
        for name in ("lr", "beta1", "beta2", "eps", "weight_decay", "exp_avg", "exp_avg_sq"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self._cast_columns()


# ---------------------------------------------------------------- a group of members


@dataclass(frozen=True)
class Member:
    """One training in a group: its seed (initial weights and batch order) and its Adam values."""

    seed: int
    hyperparameters: Hyperparameters


def alone_model(spec: models.ArchitectureSpec, seed: int) -> nn.Module:
    """The member's initial network, exactly as the unfused path builds it (trial.run_repeats)."""
    torch.manual_seed(seed)
    return models.build(spec)


class FusedGroup:
    """Members 0..K-1 trained as one: the fused model, its optimiser, each member's batch-order
    generator, and which members are still in it (`active`, in the model's position order)."""

    def __init__(
        self,
        spec: models.ArchitectureSpec,
        members: Sequence[Member],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.members = list(members)
        self.model = fuse([alone_model(spec, m.seed) for m in self.members], device, dtype)
        self.optimizer = MemberAdam(self.model, [m.hyperparameters for m in self.members])
        self.generators = [torch.Generator().manual_seed(m.seed) for m in self.members]
        self.active = list(range(len(self.members)))

    def position(self, member: int) -> int:
        if member not in self.active:
            raise ValueError(f"member {member} is not in the group (active: {self.active})")
        return self.active.index(member)

    def drop(self, members: Iterable[int]) -> None:
        """Take `members` out at an epoch boundary; the others keep their weights, Adam state,
        BatchNorm statistics and batch order, and train on as before (to rounding)."""
        gone = {self.position(m) for m in members}
        if not gone:
            return
        keep = [p for p in range(len(self.active)) if p not in gone]
        self.model.keep(keep)
        self.optimizer.keep(keep)
        self.active = [self.active[p] for p in keep]

    def hyperparameters(self, member: int) -> Hyperparameters:
        """Member's Adam values as the optimiser holds them."""
        return self.optimizer.applied(self.position(member))

    def member_model(self, member: int) -> nn.Module:
        """A stand-alone copy of `member`'s network as it is now."""
        return self.model.member(self.position(member))


# ---------------------------------------------------------------- training and evaluation


def group_batches(
    data: DeviceData, batch_size: int, generators: Sequence[torch.Generator]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch for every member: images (b, K*C, H, W) and labels (K, b). Member k's batches
    are those DeviceData.train_batches draws with generators[k]."""
    n = len(data.y_train)
    orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(data.y_train.device)
    for start in range(0, n, batch_size):
        index = orders[:, start : start + batch_size]  # (K, b)
        # One gather for all members, image-major so that each image's K members lie side by side.
        images = data.x_train.index_select(0, index.t().reshape(-1))
        yield images.view(index.shape[1], -1, *images.shape[2:]), data.y_train[index]


def member_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy, (K,), from logits (K, b, classes) and labels (K, b)."""
    k = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(k, -1).mean(dim=1)


def train_group_epoch(group: FusedGroup, data: DeviceData, batch_size: int) -> list[float]:
    """One pass over the training split for every active member; their mean losses, in position order."""
    model, optimizer = group.model, group.optimizer
    model.train()
    generators = [group.generators[m] for m in group.active]
    # Accumulated as loop.train_on does (default dtype, divided in Python), so the figures compare.
    loss_sums, count = torch.zeros(model.members, device=model.flat.device), 0
    for images, labels in group_batches(data, batch_size, generators):
        optimizer.zero_grad()
        losses = member_losses(model(images), labels)
        # The sum: each member's gradient is that of its own mean loss, as when it trains alone.
        losses.sum().backward()
        optimizer.step()
        loss_sums += losses.detach() * labels.shape[1]
        count += labels.shape[1]
    return [total / count for total in loss_sums.tolist()]


def evaluate_group(model: FusedModel, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Every member's mean cross-entropy and accuracy on the same (x, y), in large no-grad chunks."""
    model.eval()
    k = model.members
    chunk = max(1, EVAL_MEMBER_IMAGES // k)
    loss_sums = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(y), chunk):
            images, labels = x[start : start + chunk], y[start : start + chunk]
            logits = model(images.repeat(1, k, 1, 1))  # every member sees the same images
            losses = F.cross_entropy(logits.flatten(0, 1), labels.repeat(k), reduction="none")
            loss_sums += losses.view(k, -1).sum(dim=1)
            correct += (logits.argmax(dim=2) == labels).sum(dim=1)
    model.train()
    n = len(y)
    return [total / n for total in loss_sums.tolist()], [hits / n for hits in correct.tolist()]


def _epoch_results(
    group: FusedGroup, data: DeviceData, epoch: int, batch_size: int, meter: Meter
) -> dict[int, EpochResult]:
    members = len(group.active)
    with window(meter, "train") as trained:
        train_losses = train_group_epoch(group, data, batch_size)
    with window(meter, "eval") as evaluated:
        test_losses, accuracies = evaluate_group(group.model, data.x_test, data.y_test)
    train, evaluation = trained.taken.share(members), evaluated.taken.share(members)
    return {
        member: EpochResult(epoch, train_losses[i], test_losses[i], accuracies[i], train, evaluation)
        for i, member in enumerate(group.active)
    }


def fit_group(
    group: FusedGroup,
    data: DeviceData,
    *,
    epochs: int,
    batch_size: int,
    meter: Meter,
    on_epoch: EpochHook | None = None,
) -> list[TrainingRun]:
    """loop.fit for a group: per epoch one energy window around the group's training, one around
    its evaluation and one around the epoch hook (the records of its trials), each shared equally
    among the members active in the epoch; one TrainingRun per member, by id.

    `on_epoch` sees every epoch of every active member, a diverged one included (so its energy is
    logged), and returns the members to stop, as loop.fit's hook does. A member whose training
    loss is NaN or infinite leaves the group as diverged; the others train on.
    """
    runs = [TrainingRun(member) for member in range(len(group.members))]
    for epoch in range(1, epochs + 1):
        if not group.active:
            break
        results = _epoch_results(group, data, epoch, batch_size, meter)
        with window(meter, "records") as records:
            stopped = set((on_epoch(results) if on_epoch else None) or ())
        share = records.taken.share(len(results))  # the epoch's records, for its members
        for member in results:
            runs[member].records.append(share)
        unknown = stopped - set(results)
        if unknown:
            raise ValueError(f"the epoch hook asked to stop members not in the group: {sorted(unknown)}")
        ended = [member for member, result in results.items() if runs[member].after_epoch(result, member in stopped)]
        group.drop(ended)
    for member in group.active:
        runs[member].state = RunState.finished
    return runs


# ---------------------------------------------------------------- which configurations fuse


@dataclass(frozen=True)
class FusionKey:
    """What members must share to train as one group. Seeds and Adam values may differ; dtype is
    not a config key (every trial trains in float32), so it cannot split a sweep."""

    architecture: models.ArchitectureSpec
    batch_size: int
    epochs: int
    dataset: tuple[object, ...]  # every dataset setting: the same images on the same device
    device: str
    energy: tuple[object, ...]  # one meter measures the whole group


def _hashable(value: object) -> object:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def fusion_key(cfg: TrainConfig) -> FusionKey:
    return FusionKey(
        architecture=models.ArchitectureSpec.from_config(cfg),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        dataset=tuple(_hashable(v) for v in astuple(cfg.dataset)),
        device=cfg.device,
        energy=(cfg.energy.backend, cfg.energy.watts_per_cpu_core),
    )


def group_for_fusion(cfgs: Sequence[TrainConfig], max_size: int | None = None) -> list[list[int]]:
    """Indices of `cfgs` grouped by `fusion_key`, each group in the order given and the groups in
    order of first appearance, split into groups of at most `max_size` configurations. Configs
    that cannot fuse with any other get a group of their own: nothing is refused here."""
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size={max_size}: must be >= 1")
    by_key: dict[FusionKey, list[int]] = {}
    for index, cfg in enumerate(cfgs):
        by_key.setdefault(fusion_key(cfg), []).append(index)
    groups = []
    for indices in by_key.values():
        size = max_size or len(indices)
        groups += [indices[start : start + size] for start in range(0, len(indices), size)]
    return groups
