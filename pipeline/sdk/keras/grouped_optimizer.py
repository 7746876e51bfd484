"""Several Keras optimizers behind one, each over its own variables (per-group learning rates).

Fine-tuning pretrained VGG16 blocks under a new head wants a learning rate for the blocks far
below the head's: a large step wrecks the pretrained filters before the head has settled.
``GroupedOptimizer`` offers exactly what ``fit_classifier`` uses of an optimizer (``build``,
``apply``, ``variables``) and routes each gradient to the optimizer of its variable's group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class GroupedOptimizer:
    """Keras optimizers, each applied to its own group of variables.

    Variables are matched by identity (``id``), as Keras' own optimizers match them; the
    routing happens in Python, so inside a ``tf.function`` it is decided once, at tracing.

    Args:
        groups: ``(optimizer, its variables)`` pairs; a variable may be in one group only.

    Raises:
        ValueError: a variable in two groups (named), or no group at all.
    """

    def __init__(self, groups: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        if not groups:
            raise ValueError("GroupedOptimizer needs at least one (optimizer, variables) group")
        self.optimizers: list[Any] = [optimizer for optimizer, _ in groups]
        self._group_of: dict[int, int] = {}
        for index, (_, variables) in enumerate(groups):
            for variable in variables:
                other = self._group_of.setdefault(id(variable), index)
                if other != index:
                    raise ValueError(f"variable {_name(variable)} is in optimizer groups {other} and {index}")

    def build(self, variables: Sequence[Any]) -> None:
        """Build each optimizer on the variables of ``variables`` that are in its group (in that order).

        Raises:
            ValueError: naming the first variable that is in no group.
        """
        for optimizer, members in zip(self.optimizers, self._split(variables), strict=True):
            optimizer.build(members)

    def apply(self, grads: Sequence[Any], variables: Sequence[Any]) -> None:
        """Apply each gradient with the optimizer of its variable's group.

        Raises:
            ValueError: naming the first variable that is in no group.
        """
        if len(grads) != len(variables):
            raise ValueError(f"{len(grads)} gradients for {len(variables)} variables")
        grad_of = {id(variable): grad for grad, variable in zip(grads, variables, strict=True)}
        for optimizer, members in zip(self.optimizers, self._split(variables), strict=True):
            if members:  # a group with nothing to update keeps its step count, as Keras does for no gradients
                optimizer.apply([grad_of[id(variable)] for variable in members], members)

    @property
    def variables(self) -> list[Any]:
        """Every optimizer's variables, group by group (the order checkpoints rely on)."""
        return [variable for optimizer in self.optimizers for variable in optimizer.variables]

    def _split(self, variables: Sequence[Any]) -> list[list[Any]]:
        split: list[list[Any]] = [[] for _ in self.optimizers]
        for variable in variables:
            index = self._group_of.get(id(variable))
            if index is None:
                raise ValueError(f"variable {_name(variable)} is in no optimizer group; add it to one")
            split[index].append(variable)
        return split


def _name(variable: Any) -> str:
    return repr(getattr(variable, "path", None) or getattr(variable, "name", None) or variable)
